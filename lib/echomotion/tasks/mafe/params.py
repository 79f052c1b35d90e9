"""Params sections of the mafe stages (registered in ``echomotion.config.Params``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from echomotion.mafe.params import MAFEAugmentParams, MAFELossParams, MAFEModelParams
from echomotion.section import Section
from echomotion.training.params import LaunchParams, TrainParams


class MAFETrainParams(Section):
    """Stage ``mafe_train``: MAFE on ED/mid/ES triplets with pseudo flow and ReID labels."""

    model: MAFEModelParams = MAFEModelParams()
    loss: MAFELossParams = MAFELossParams()
    augment: MAFEAugmentParams = MAFEAugmentParams()
    extra_triplets: int = Field(
        0,
        ge=0,
        description="Extra random (t0, t0 + g, t0 + 2g) triplets per TRAIN video and epoch, "
        "labelled with DIS flow and the video's ReID embeddings; 0: ED/ES only (the paper).",
    )
    extra_half_gap: tuple[int, int] = Field(
        (2, 5), description="Range [lo, hi] of the half gap g of the extra triplets, frames."
    )
    eval_batch_size: int = Field(16, ge=1, description="Triplets per forward pass in evaluation.")
    train: TrainParams = TrainParams(
        steps=300,
        batch_size=8,
        lr=1e-3,
        weight_decay=1e-4,
        warmup_steps=10,
        lr_schedule="cosine",
        checkpoint_every=50,
        log_every=10,
    )
    launch: LaunchParams = LaunchParams()

    @model_validator(mode="after")
    def _check(self) -> MAFETrainParams:
        lo, hi = self.extra_half_gap
        if not 1 <= lo <= hi:
            raise ValueError(f"extra_half_gap must satisfy 1 <= lo <= hi, got {(lo, hi)}")
        return self


class FeaturesParams(Section):
    """Stage ``features``: motion/appearance vectors of every triplet video and their tests."""

    batch_size: int = Field(32, ge=1, description="Frame pairs per MAFE forward pass.")
    retrieval_shifts: tuple[int, ...] = Field(
        (-3, 3, 6),
        min_length=1,
        description="Shifts k of the (ED + k, ES + k) pairs forming the identity-retrieval "
        "gallery (each index clipped to the video).",
    )
    ridge_alphas: tuple[float, ...] = Field(
        (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
        min_length=1,
        description="Ridge penalties tried for the EF probe; the best on VAL is kept.",
    )

    @model_validator(mode="after")
    def _check(self) -> FeaturesParams:
        if min(self.ridge_alphas) <= 0:
            raise ValueError(f"ridge_alphas must be > 0, got {self.ridge_alphas}")
        return self
