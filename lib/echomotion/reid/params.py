"""Params of the reid models: pydantic only (validating params.yaml loads no model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from echomotion.section import Fraction, Section


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
