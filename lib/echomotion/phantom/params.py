"""Params of the phantom generator: the params.yaml section ``phantom`` (re-exported by
:mod:`echomotion.tasks.phantom.params`, the stage's home of its section)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from echomotion.section import Fraction, Section

if TYPE_CHECKING:
    pass


class PhantomParams(Section):
    """The synthetic echo phantom written in EchoNet-Dynamic layout."""

    n_videos: int = Field(..., ge=3)
    fps: float = Field(..., gt=0)
    duration_s: tuple[float, float] = Field(..., description="Clip length range.")
    heart_rate_bpm: tuple[float, float]
    ef_percent: tuple[float, float]
    size: int = Field(..., ge=32)
    split_fractions: tuple[Fraction, Fraction, Fraction] = Field(
        ..., description="TRAIN, VAL, TEST."
    )
    codec: Literal["mjpeg", "ffv1"]

    @model_validator(mode="after")
    def _check(self) -> PhantomParams:
        for name in ("duration_s", "heart_rate_bpm", "ef_percent"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be an increasing positive range, got {[lo, hi]}")
        if abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must sum to 1, got {self.split_fractions}")
        return self
