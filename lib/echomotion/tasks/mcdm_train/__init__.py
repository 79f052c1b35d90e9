"""Stage ``mcdm_train``: the motion-conditioned video diffusion model
(:mod:`.run`, section :mod:`.params`)."""
