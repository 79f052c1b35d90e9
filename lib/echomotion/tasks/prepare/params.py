"""Params section ``prepare``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from echomotion.section import Section

if TYPE_CHECKING:
    pass


class PrepareParams(Section):
    """Decoding, resampling and storing the videos."""

    target_fps: float | None = Field(..., gt=0, description="None keeps each video's rate.")
    size: int = Field(..., ge=16)
    min_frames: int = Field(..., ge=2, description="Fewer frames after resampling: rejected.")
    ef_range: tuple[float, float]
    shard_frames: int = Field(..., ge=1, description="Frames per shard file of the store.")
    chunk_frames: int = Field(..., ge=1, description="Frames per compressed chunk.")
    ed_es: Literal["tracings", "auto"] = Field(
        ...,
        description="tracings: ED/ES from VolumeTracings, the label-free detector where a "
        "video has none; auto: the detector for every video (no labels used).",
    )
    low_fps: Literal["repeat", "native"] = Field(
        ...,
        description="A video below target_fps: repeat: brought up to target_fps by repeating "
        "the nearest source frame (stored fps = target_fps); native: stored at its own rate "
        "(stored fps = source fps), never upsampled. Videos above target_fps are always "
        "downsampled.",
    )
    workers: int = Field(
        ...,
        ge=1,
        description="Processes decoding videos; any number gives the same store bytes.",
    )
    native_frames: bool = Field(
        ...,
        description="Also store every video at its source frame rate (same size, exact traced "
        "ED/ES) as the nested store videos.zarr/native, from the same decode; the resampled "
        "store is unchanged. Read when shared.pseudo_label_frames is native.",
    )

    @model_validator(mode="after")
    def _check(self) -> PrepareParams:
        if self.shard_frames % self.chunk_frames:
            raise ValueError(
                f"shard_frames ({self.shard_frames}) must be a multiple of "
                f"chunk_frames ({self.chunk_frames})"
            )
        return self
