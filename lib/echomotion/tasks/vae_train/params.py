"""Params section ``vae_train``."""

from __future__ import annotations

from pydantic import Field, model_validator

from echomotion.diffusion.params import (
    VAELossParams,
    VAEModelParams,
)
from echomotion.section import Section
from echomotion.training.params import LaunchParams, TrainParams


class VAETrainParams(Section):
    """Stage ``vae_train``: the grayscale latent autoencoder on TRAIN frames."""

    model: VAEModelParams
    loss: VAELossParams
    train: TrainParams
    launch: LaunchParams
    crop_size: int | None = Field(
        ..., ge=8, description="Random square crop of each training frame; None: whole frames."
    )
    scale_frames: int = Field(
        ..., ge=2, description="TRAIN frames (evenly spaced) that set the latent scaling factor."
    )
    eval_frames: int = Field(
        ..., ge=1, description="VAL frames (evenly spaced) scored by reconstruction PSNR/SSIM."
    )
    encode_batch_size: int = Field(..., ge=1, description="Frames per VAE call outside training.")

    @model_validator(mode="after")
    def _crop_fits_the_stride(self) -> VAETrainParams:
        factor = self.model.downsampling
        if self.crop_size is not None and self.crop_size % factor:
            raise ValueError(
                f"crop_size must be a multiple of {factor} (the VAE's downsampling), "
                f"got {self.crop_size}"
            )
        return self
