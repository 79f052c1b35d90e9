"""Params section ``features``."""

from __future__ import annotations

from pydantic import Field, model_validator

from echomotion.section import Section


class FeaturesParams(Section):
    """Stage ``features``: motion/appearance vectors of every triplet video and their tests."""

    batch_size: int = Field(..., ge=1, description="Frame pairs per MAFE forward pass.")
    retrieval_shifts: tuple[int, ...] = Field(
        ...,
        min_length=1,
        description="Shifts k of the (ED + k, ES + k) pairs forming the identity-retrieval "
        "gallery (each index clipped to the video).",
    )
    ridge_alphas: tuple[float, ...] = Field(
        ...,
        min_length=1,
        description="Ridge penalties tried for the EF probe; the best on VAL is kept.",
    )

    @model_validator(mode="after")
    def _check(self) -> FeaturesParams:
        if min(self.ridge_alphas) <= 0:
            raise ValueError(f"ridge_alphas must be > 0, got {self.ridge_alphas}")
        return self
