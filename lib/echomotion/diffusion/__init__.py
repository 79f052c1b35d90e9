"""Latent VAE and motion-conditioned video diffusion model (MCDM): the generator."""
