"""Params of the flow models: pydantic only (validating params.yaml loads no model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from echomotion.section import Section


class PWCLiteParams(Section):
    """Architecture of the flow network: the arguments of :class:`echomotion.flow.PWCLite`."""

    pyramid_channels: tuple[int, ...] = Field(
        (16, 32, 48, 64), description="Feature channels per pyramid level, finest first."
    )
    max_displacement: int = Field(3, ge=1, description="Cost-volume search radius per level.")
    feature_channels: int = Field(32, ge=1, description="1x1 projection fed to the estimator.")
    estimator_channels: tuple[int, ...] = (64, 48, 32)
    context_channels: tuple[int, ...] = (48, 48, 32, 16)
    context_dilations: tuple[int, ...] = (1, 2, 4, 8)
    estimator_connectivity: Literal["chain", "reduce"] = Field(
        "chain", description="reduce: each estimator conv reads the previous two (UnSAMFlow)."
    )
    output_level: int = Field(
        0, ge=0, description="Finest pyramid level decoded (0: stride 2, 1: stride 4)."
    )
    learned_upsampler: bool = Field(
        False, description="Convex (RAFT) upsampling by 2**(output_level+1); False: bilinear."
    )
    upsampler_channels: int = Field(128, ge=1, description="Hidden width of the upsampler.")
    upsampler_feature_layer: int = Field(
        -1, description="Context layer whose output the upsampler reads (-1: last hidden)."
    )


class FlowProviderParams(Section):
    """Which flow a consumer uses: the trained network or a classical method."""

    method: Literal["network", "dis", "farneback"] = "network"
    dis_preset: Literal["ultrafast", "fast", "medium"] = "medium"
    batch_size: int = Field(64, ge=1, description="Frame pairs per network forward pass.")


class SpatialTransformParams(Section):
    """Random affine transform of a frame pair for the augmentation regulariser (ARFlow's
    ``RandomAffineFlow``; official values: UnSAMFlow ``echo_base.json`` ``st_cfg``).

    Each pair gets a global transform and, for frame 2, a small relative one on top; ranges
    are ``(global_min, global_max, relative_min, relative_max)`` except ``trans``.
    """

    trans: tuple[float, float] = Field(
        (0.04, 0.005), description="Translation ranges (global, relative), normalized units."
    )
    zoom: tuple[float, float, float, float] = Field(
        (1.0, 1.4, 0.99, 1.01), description="Zoom ranges (>1 zooms in)."
    )
    squeeze: tuple[float, float, float, float] = Field(
        (1.0, 1.0, 1.0, 1.0), description="Aspect (x / y scale) ranges."
    )
    rotate: tuple[float, float, float, float] = Field(
        (-0.01, 0.01, -0.01, 0.01), description="Rotation ranges (radians)."
    )
    hflip: bool = Field(True, description="Mirror the pair horizontally with probability 1/2.")
    noise_std: float = Field(
        0.04, ge=0, description="Gaussian noise std drawn in [0, noise_std] per batch; 0: none."
    )
    max_tries: int = Field(
        100, ge=1, description="Redraws until the transformed view lies inside the frame."
    )


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
    photometric_occlusion: bool = Field(
        True,
        description="False: the photometric and segment terms use every pixel and the mask "
        "serves only the AR loss (UnSAMFlow's echo trainer, occ_aware=False).",
    )
    occ_alpha1: float = Field(0.01, ge=0, description="UnFlow criterion, relative term.")
    occ_alpha2: float = Field(0.5, ge=0, description="UnFlow criterion, absolute term (px^2).")
    w_smooth: float = Field(2.0, ge=0, description="Edge-aware smoothness.")
    smooth_order: Literal[1, 2] = Field(2, description="1: first-order, 2: second-order.")
    edge_alpha: float = Field(10.0, ge=0, description="Edge weight exp(-alpha * |grad I|).")
    w_segment: float = Field(0.05, ge=0, description="Segment-motion guidance.")
    segment_model: Literal["affine", "homography"] = "affine"
    segment_min_pixels: int = Field(16, ge=4, description="Smaller segments are not fitted.")
    ransac_threshold: float | None = Field(
        None,
        gt=0,
        description="Homography fit by RANSAC with this inlier threshold (px), then a refit on "
        "the inliers; segments with under half inliers are not guided. None: least squares.",
    )
    ransac_iterations: int = Field(100, ge=1, description="Minimal samples drawn per segment.")
    w_ar: float = Field(
        0.0,
        ge=0,
        description="Augmentation regulariser (ARFlow 'st'): flow of a transformed "
        "pair vs. the transformed pseudo flow; 0: off (no extra forward pass).",
    )
    ar_mask: bool = Field(True, description="AR loss on non-occluded pixels only.")
    ar_transform: SpatialTransformParams = SpatialTransformParams()

    @model_validator(mode="after")
    def _ransac_needs_homography(self) -> FlowLossParams:
        if self.ransac_threshold is not None and self.segment_model != "homography":
            raise ValueError(
                f"ransac_threshold needs segment_model 'homography', got '{self.segment_model}'"
            )
        return self

    @field_validator("census_patch")
    @classmethod
    def _odd_patch(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"census_patch must be odd, got {value}")
        return value


# MedSAM box prompts (x0, y0, x1, y1) in pixels of a 112 x 112 frame: LabelfreeMCDM
# MedSAM/MedSAM_echo.py (box_np); scaled to the frame size.
MEDSAM_ECHO_BOXES = ((25, 25, 50, 70), (50, 10, 90, 70), (15, 55, 60, 100), (50, 55, 90, 110))


class LossStage(Section):
    """Loss weights from optimizer step ``from_step`` on (unset: the previous stage's value).

    UnSAMFlow's stages (``echo_base.json`` ``stage1``, ``echo_aug+hg+mf.json`` ``stage2``):
    census and the AR loss from epoch 50, homography smoothness from epoch 150.
    """

    from_step: int = Field(ge=0, description="First optimizer step of the stage (0-based).")
    w_census: float | None = Field(None, ge=0, description="FlowLossParams.w_census from here on.")
    w_l1: float | None = Field(None, ge=0, description="FlowLossParams.w_l1 from here on.")
    w_ssim: float | None = Field(None, ge=0, description="FlowLossParams.w_ssim from here on.")
    w_smooth: float | None = Field(None, ge=0, description="FlowLossParams.w_smooth from here on.")
    w_segment: float | None = Field(
        None, ge=0, description="FlowLossParams.w_segment from here on."
    )
    w_ar: float | None = Field(None, ge=0, description="FlowLossParams.w_ar from here on.")


class SegmentParams(Section):
    """Where the segments of the segment-guided flow loss come from."""

    method: Literal["classical", "sam", "medsam", "sam_medsam"] = Field(
        "classical",
        description="sam: SAM automatic masks; medsam: MedSAM box prompts; sam_medsam: "
        "MedSAM masks painted over the SAM ones.",
    )
    sam_checkpoint: str | None = Field(None, description="Local SAM weights; needed by 'sam'.")
    sam_model_type: Literal["vit_b", "vit_l", "vit_h"] = "vit_b"
    medsam_checkpoint: str | None = Field(
        None, description="Local MedSAM (vit_b) weights; needed by 'medsam', 'sam_medsam'."
    )
    medsam_boxes: tuple[tuple[int, int, int, int], ...] = Field(
        MEDSAM_ECHO_BOXES, description="Box prompts (x0, y0, x1, y1) in px of a 112 px frame."
    )
    smooth_sigma: float = Field(2.0, gt=0, description="Gaussian blur before thresholding (px).")
    threshold: Literal["otsu", "percentile"] = "otsu"
    dark_percentile: float = Field(30.0, gt=0, lt=100, description="Used by 'percentile'.")
    tissue_grid: int = Field(3, ge=1, description="Tissue is split into grid x grid cells.")
    min_area: int = Field(20, ge=1, description="Smaller components are left unlabelled.")

    @model_validator(mode="after")
    def _check(self) -> SegmentParams:
        if self.method in ("sam", "sam_medsam") and not self.sam_checkpoint:
            raise ValueError(
                f"segments.method '{self.method}' needs segments.sam_checkpoint (a local path)"
            )
        if self.method in ("medsam", "sam_medsam") and not self.medsam_checkpoint:
            raise ValueError(
                f"segments.method '{self.method}' needs segments.medsam_checkpoint (a local path)"
            )
        return self
