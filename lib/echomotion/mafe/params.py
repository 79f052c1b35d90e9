"""Params of the mafe models: pydantic only (validating params.yaml loads no model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from echomotion.section import Fraction, Section


def check_architecture(
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    motion_ratio: int,
) -> None:
    """Raise ValueError naming the value when the stage widths, heads and depths do not fit."""
    if embed_dim < 1 or motion_ratio < 1:
        raise ValueError(f"embed_dim ({embed_dim}) and motion_ratio ({motion_ratio}) must be >= 1")
    if any(d < 1 for d in depths):
        raise ValueError(f"every depth must be >= 1, got depths={list(depths)}")
    if not 1 <= len(num_heads) < len(depths):
        raise ValueError(
            f"need 1 <= len(num_heads) < len(depths) (at least one conv stage), got "
            f"num_heads={list(num_heads)}, depths={list(depths)}"
        )
    first = len(depths) - len(num_heads)
    for i, heads in enumerate(num_heads, start=first):
        dim, depth = embed_dim * 2**i, depths[i]
        motion = motion_ratio * dim
        if dim % heads or motion % depth or (motion // depth) % heads:
            raise ValueError(
                f"stage {i}: width {dim} and per-block motion width {motion}/{depth} must "
                f"divide evenly by num_heads={heads}"
            )


def motion_vector_dim(
    embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], motion_ratio: int,
    flip_tta: bool,
) -> int:  # fmt: skip
    """Width of MAFE's motion vector: both frames' pooled motion of the last two transformer
    stages, ``2 * motion_ratio * (C[-2] + C[-1])``, twice that with ``flip_tta``."""
    n = len(depths)
    last = range(max(n - len(num_heads), n - 2), n)
    width = 2 * motion_ratio * sum(embed_dim * 2**i for i in last)
    return 2 * width if flip_tta else width


class MAFEModelParams(Section):
    """Architecture of MAFE; the defaults are the CPU-sized network."""

    embed_dim: int = Field(8, ge=1, description="F: stage i has F * 2**i channels.")
    depths: tuple[int, ...] = Field(
        (1, 1, 1, 1, 1), description="Conv layers or transformer blocks per stage."
    )
    num_heads: tuple[int, ...] = Field(
        (2, 4), description="Heads per transformer stage; the last len(num_heads) stages."
    )
    window_size: int = Field(7, ge=1, description="Attention window side, in tokens.")
    mlp_ratio: float = Field(4.0, gt=0)
    motion_ratio: int = Field(2, ge=1, description="Motion channels per stage channel.")
    reid_dim: int = Field(128, ge=1, description="Width of the ReID embedding to regress.")
    flip_tta: bool = Field(
        False,
        description="Motion vector of the pair and of its 180-degree rotated copy (H and W "
        "flipped), concatenated: EMA-VFI's fast test-time augmentation, which the official "
        "inference uses (twice the width). Inference only: training is unchanged.",
    )
    subtract_still: bool = Field(
        False,
        description="Motion vector of the pair minus the mean of those of its still pairs "
        "(each frame paired with itself): takes out what the pooled features say about the "
        "anatomy (identity), keeps the motion; same width. Inference only: training is "
        "unchanged. Not in the paper.",
    )

    @model_validator(mode="after")
    def _check(self) -> MAFEModelParams:
        check_architecture(self.embed_dim, self.depths, self.num_heads, self.motion_ratio)
        return self

    @property
    def motion_vector_dim(self) -> int:
        """Width of the motion vector this MAFE gives (the MCDM's ``motion_dim``)."""
        return motion_vector_dim(
            self.embed_dim, self.depths, self.num_heads, self.motion_ratio, self.flip_tta
        )


class MAFEAugmentParams(Section):
    """Probabilities of each augmentation, drawn independently per sample."""

    hflip: Fraction = Field(0.5, description="Probability of a horizontal flip.")
    vflip: Fraction = Field(0.5, description="Probability of a vertical flip.")
    rot90: bool = Field(True, description="Rotate by a uniform multiple of 90 degrees.")
    time_swap: Fraction = Field(0.5, description="Probability of swapping img0 and img1.")


class MAFELossParams(Section):
    """Weights and forms of the MAFE loss terms (paper: flow 0.01, reid 1)."""

    flow_ratio: float = Field(0.01, ge=0, description="Weight of L_flow.")
    reid_ratio: float = Field(1.0, ge=0, description="Weight of L_reid.")
    coarse_ratio: float = Field(
        0.5, ge=0, description="Weight of the Laplacian L1 of each coarse-to-fine blend."
    )
    flow_loss: Literal["l1", "charbonnier"] = "l1"
    reid_loss: Literal["cosine", "mse"] = "cosine"
    pyramid_levels: int = Field(5, ge=1)
