"""Params section ``mafe_train``."""

from __future__ import annotations

from pydantic import Field, model_validator

from echomotion.mafe.params import MAFEAugmentParams, MAFELossParams, MAFEModelParams
from echomotion.section import Section
from echomotion.training.params import LaunchParams, TrainParams


class MAFETrainParams(Section):
    """Stage ``mafe_train``: MAFE on ED/mid/ES triplets with pseudo flow and ReID labels."""

    model: MAFEModelParams
    loss: MAFELossParams
    augment: MAFEAugmentParams
    extra_triplets: int = Field(
        ...,
        ge=0,
        description="Extra random (t0, t0 + g, t0 + 2g) triplets per TRAIN video and epoch, "
        "labelled with DIS flow and the video's ReID embeddings; 0: ED/ES only (the paper).",
    )
    extra_half_gap: tuple[int, int] = Field(
        ..., description="Range [lo, hi] of the half gap g of the extra triplets, frames."
    )
    eval_batch_size: int = Field(..., ge=1, description="Triplets per forward pass in evaluation.")
    train: TrainParams
    launch: LaunchParams

    @model_validator(mode="after")
    def _check(self) -> MAFETrainParams:
        lo, hi = self.extra_half_gap
        if not 1 <= lo <= hi:
            raise ValueError(f"extra_half_gap must satisfy 1 <= lo <= hi, got {(lo, hi)}")
        return self
