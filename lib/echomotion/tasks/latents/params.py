"""Params section ``latents``."""

from __future__ import annotations

from pydantic import Field, model_validator

from echomotion.section import Section


class LatentsParams(Section):
    """Stage ``latents``: every prepared frame encoded once."""

    batch_size: int = Field(..., ge=1, description="Frames per VAE encoder call.")
    shard_frames: int = Field(..., ge=1, description="Latent frames per shard file.")
    chunk_frames: int = Field(..., ge=1, description="Latent frames per compressed chunk.")

    @model_validator(mode="after")
    def _whole_chunks(self) -> LatentsParams:
        if self.shard_frames % self.chunk_frames:
            raise ValueError(
                f"shard_frames ({self.shard_frames}) must be a multiple of "
                f"chunk_frames ({self.chunk_frames})"
            )
        return self
