"""Stages of the generator group: the latent VAE, latents, the MCDM and sampling.

``vae_train`` trains the grayscale ``AutoencoderKL`` and records its latent scaling
factor; ``latents`` encodes every prepared frame; ``mcdm_train`` trains the
motion-conditioned video UNet (one or many processes) and saves the sampling pipeline;
``sample`` writes a synthetic EchoNet-Dynamic-format dataset. The command
``python -m echomotion.generate`` makes one video from a driving and an appearance video.
"""
