"""Stage ``latents``: every prepared frame through the VAE encoder
(:mod:`.run`, section :mod:`.params`)."""
