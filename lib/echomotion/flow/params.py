"""Params of the flow models: pydantic only (validating params.yaml loads no model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from echomotion.section import Section


class FlowProviderParams(Section):
    """Which flow a consumer uses: the trained network or a classical method."""

    method: Literal["network", "dis", "farneback"] = "network"
    dis_preset: Literal["ultrafast", "fast", "medium"] = "medium"
    batch_size: int = Field(64, ge=1, description="Frame pairs per network forward pass.")


class FlowLossParams(Section):
    """Weights and constants of the unsupervised flow loss."""

    w_census: float = Field(1.0, ge=0, description="Census (ternary) photometric term.")
    w_l1: float = Field(0.15, ge=0, description="L1 photometric term.")
    w_ssim: float = Field(0.85, ge=0, description="SSIM photometric term.")
    census_patch: int = Field(7, ge=3, description="Odd side of the census window.")
    pyramid_weights: tuple[float, ...] = Field(
        (1.0, 1.0, 1.0, 0.5),
        description="Photometric weight of flows[0] (full resolution), flows[1] (stride 2), ...",
    )
    occlusion: bool = Field(True, description="Mask forward-backward inconsistent pixels.")
    occ_alpha1: float = Field(0.01, ge=0, description="UnFlow criterion, relative term.")
    occ_alpha2: float = Field(0.5, ge=0, description="UnFlow criterion, absolute term (px^2).")
    w_smooth: float = Field(2.0, ge=0, description="Edge-aware smoothness.")
    smooth_order: Literal[1, 2] = Field(2, description="1: first-order, 2: second-order.")
    edge_alpha: float = Field(10.0, ge=0, description="Edge weight exp(-alpha * |grad I|).")
    w_segment: float = Field(0.05, ge=0, description="Segment-motion guidance.")
    segment_model: Literal["affine", "homography"] = "affine"
    segment_min_pixels: int = Field(16, ge=4, description="Smaller segments are not fitted.")

    @field_validator("census_patch")
    @classmethod
    def _odd_patch(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"census_patch must be odd, got {value}")
        return value


class SegmentParams(Section):
    """Where the segments of the segment-guided flow loss come from."""

    method: Literal["classical", "sam"] = "classical"
    sam_checkpoint: str | None = Field(None, description="Local SAM weights; needed by 'sam'.")
    sam_model_type: Literal["vit_b", "vit_l", "vit_h"] = "vit_b"
    smooth_sigma: float = Field(2.0, gt=0, description="Gaussian blur before thresholding (px).")
    threshold: Literal["otsu", "percentile"] = "otsu"
    dark_percentile: float = Field(30.0, gt=0, lt=100, description="Used by 'percentile'.")
    tissue_grid: int = Field(3, ge=1, description="Tissue is split into grid x grid cells.")
    min_area: int = Field(20, ge=1, description="Smaller components are left unlabelled.")

    @model_validator(mode="after")
    def _check(self) -> SegmentParams:
        if self.method == "sam" and not self.sam_checkpoint:
            raise ValueError("segments.method 'sam' needs segments.sam_checkpoint (a local path)")
        return self
