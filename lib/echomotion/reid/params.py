"""Params of the reid models: pydantic only (validating params.yaml loads no model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from echomotion.section import Fraction, Section


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


class ReIDLossParams(Section):
    """Weights and hyper-parameters of the ReID training loss."""

    id_weight: float = Field(1.0, ge=0, description="Weight of the identity cross-entropy.")
    triplet_weight: float = Field(1.0, ge=0, description="Weight of the triplet loss.")
    label_smoothing: Fraction = Field(0.1, description="Epsilon of the smoothed ID targets.")
    triplet: Literal["margin", "soft"] = Field(
        "margin", description="'margin': relu(d_ap - d_an + m); 'soft': softplus(d_ap - d_an)."
    )
    margin: float = Field(0.3, ge=0, description="Triplet margin (used by 'margin').")


class ReIDPairParams(Section):
    """Frame pairs of the Siamese method (``reid_train.method: siamese``)."""

    positive_fraction: Fraction = Field(
        0.5,
        description="Share of same-video pairs in every batch, the rest pairing frames of "
        "two videos (official 0.5: echosyn/common/datasets.py SiameseUSDataset).",
    )
