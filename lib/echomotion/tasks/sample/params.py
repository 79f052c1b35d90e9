"""Params section ``sample``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from echomotion.diffusion.params import SamplerName
from echomotion.section import Section, Split


class SampleParams(Section):
    """Stage ``sample``: the synthetic EchoNet-Dynamic-format dataset."""

    splits: tuple[Split, ...] = Field(
        ..., min_length=1, description="Motion sources: the videos of these splits."
    )
    scheduler: SamplerName
    num_inference_steps: int = Field(..., ge=1)
    guidance_scale: float = Field(..., ge=0, description="Classifier-free guidance; 1 = off.")
    num_frames: int = Field(
        ..., ge=1, description="Frames per video; more than the training window -> stitching."
    )
    window_overlap: int | None = Field(
        ...,
        ge=0,
        description="Known frames carried into each next window (None: window // 4, at least 1).",
    )
    noise_aug_strength: float = Field(..., ge=0, description="Noise on the reference latent.")
    codec: Literal["mjpeg", "ffv1"]
    preview_sources: int = Field(
        ..., ge=1, description="Motion sources shown in grid.png and samples.gif."
    )
    preview_frames: int = Field(..., ge=1, description="Frames per row of grid.png.")
    protocol: Literal["transfer", "official"] = Field(
        ...,
        description="transfer: per source transfer_sources transfer videos (the next videos' "
        "first frames) and a self video (own first frame); official (LabelfreeMCDM "
        "evaluation): sources sorted by file name, one self video each, its reference a "
        "random frame (seeded).",
    )
    transfer_sources: int = Field(
        ...,
        ge=0,
        description="Transfer-mode videos per motion source (protocol transfer): the "
        "appearance of each of the next N videos of the splits in store order (0: self only).",
    )
    max_sources: int | None = Field(
        ..., ge=1, description="Only the first N motion sources (None: all; official: 2048)."
    )
