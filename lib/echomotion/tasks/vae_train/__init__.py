"""Stage ``vae_train``: the grayscale latent autoencoder (:mod:`.run`, section :mod:`.params`)."""
