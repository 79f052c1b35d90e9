"""Params sections of the reid stages (registered in ``echomotion.config.Params``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from echomotion.reid.params import ReIDLossParams, ReIDPairParams
from echomotion.section import Fraction, Section, Split
from echomotion.training.params import LaunchParams, TrainParams


class ReIDModelParams(Section):
    """Architecture of the ReID encoder (``num_identities`` comes from the data)."""

    widths: tuple[int, ...] = Field((16, 32, 64, 128), description="Channels per stage.")
    blocks: tuple[int, ...] = Field((1, 1, 1, 1), description="Residual blocks per stage.")
    stem_stride: int = Field(4, ge=1, description="Stride of the stem conv (4: 112 -> 28).")
    embedding_dim: int = Field(128, ge=1, description="Size D of the exported embedding.")

    @model_validator(mode="after")
    def _check(self) -> ReIDModelParams:
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ValueError(
                f"widths {self.widths} and blocks {self.blocks} must be non-empty, same length"
            )
        return self


class ReIDAugmentParams(Section):
    """Frame augmentation of :class:`~echomotion.reid.FrameIdentityDataset` (no flips)."""

    max_shift: int = Field(4, ge=0, description="Random translation, pixels per axis.")
    brightness: Fraction = Field(0.1, description="Additive offset drawn from U(-b, b).")
    contrast: Fraction = Field(0.2, description="Gain around the mean from U(1 - c, 1 + c).")


class ReIDTrainParams(Section):
    """Stage ``reid_train``: identity = TRAIN video; P x K batches of its frames (bnneck)
    or balanced batches of frame pairs (siamese)."""

    method: Literal["bnneck", "siamese"] = Field(
        "bnneck",
        description="'bnneck': ResNet + BNNeck, identity + triplet loss on P x K batches; "
        "'siamese': ResNet + pair head, same/different cross-entropy on frame pairs "
        "(EchoNet-Synthetic privacy network). Both export the L2-normalised D features.",
    )
    model: ReIDModelParams = ReIDModelParams()
    loss: ReIDLossParams = ReIDLossParams()
    pairs: ReIDPairParams = ReIDPairParams()
    augment: ReIDAugmentParams = ReIDAugmentParams()
    frames_per_video: int | None = Field(
        None, ge=2, description="Evenly spaced frames kept per TRAIN video; None: all."
    )
    instances: int = Field(
        4,
        ge=2,
        description="K frames per identity in a batch; P = train.batch_size / K (bnneck).",
    )
    train: TrainParams = TrainParams(
        steps=400,
        batch_size=32,
        lr=1e-3,
        weight_decay=5e-4,
        warmup_steps=30,
        lr_schedule="cosine",
        checkpoint_every=200,
        log_every=20,
    )
    launch: LaunchParams = LaunchParams()

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


class ReIDExportParams(Section):
    """Stage ``reid_export``: ED/ES embeddings of triplet videos and held-out retrieval."""

    eval_splits: tuple[Split, ...] = Field(
        ("VAL", "TEST"), min_length=1, description="Held-out splits scored for retrieval."
    )
    eval_frames: int = Field(
        8, ge=2, description="Evenly spaced frames per held-out video (queries and gallery)."
    )
    pixel_size: int = Field(
        16, ge=1, description="Raw-pixel baseline: frames average-pooled to this size."
    )
    batch_size: int = Field(64, ge=1, description="Frames per forward pass.")

    @model_validator(mode="after")
    def _check(self) -> ReIDExportParams:
        if "TRAIN" in self.eval_splits:
            raise ValueError(
                f"eval_splits {self.eval_splits} must not hold TRAIN (seen in training)"
            )
        return self
