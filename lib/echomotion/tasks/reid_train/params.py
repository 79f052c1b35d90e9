"""Params section ``reid_train``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from echomotion.reid.params import (
    ReIDAugmentParams,
    ReIDLossParams,
    ReIDModelParams,
    ReIDPairParams,
)
from echomotion.section import Section
from echomotion.training.params import LaunchParams, TrainParams


class ReIDTrainParams(Section):
    """Stage ``reid_train``: identity = TRAIN video; P x K batches of its frames (bnneck)
    or balanced batches of frame pairs (siamese)."""

    method: Literal["bnneck", "siamese"] = Field(
        ...,
        description="'bnneck': ResNet + BNNeck, identity + triplet loss on P x K batches; "
        "'siamese': ResNet + pair head, same/different cross-entropy on frame pairs "
        "(EchoNet-Synthetic privacy network). Both export the L2-normalised D features.",
    )
    model: ReIDModelParams
    loss: ReIDLossParams
    pairs: ReIDPairParams
    augment: ReIDAugmentParams
    frames_per_video: int | None = Field(
        ..., ge=2, description="Evenly spaced frames kept per TRAIN video; None: all."
    )
    instances: int = Field(
        ...,
        ge=2,
        description="K frames per identity in a batch; P = train.batch_size / K (bnneck).",
    )
    train: TrainParams
    launch: LaunchParams

    @model_validator(mode="after")
    def _check(self) -> ReIDTrainParams:
        if self.method == "siamese":  # train.batch_size counts pairs
            return self
        p, rest = divmod(self.train.batch_size, self.instances)
        if rest or p < 2:
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) must be a multiple of instances "
                f"({self.instances}) holding at least 2 identities (for triplet negatives)"
            )
        return self
