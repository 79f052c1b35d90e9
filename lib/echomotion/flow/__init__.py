"""Pseudo flow without labels: an UnSAMFlow-style network, its losses and classical baselines."""

from .classical import (
    DISFlow,
    FarnebackFlow,
    FlowProvider,
    FlowProviderParams,
    NetworkFlow,
    make_flow_provider,
)
from .losses import (
    FlowLossParams,
    census_distance,
    fit_segment_motion,
    make_flow_loss,
    non_occlusion_mask,
    photometric_loss,
    segment_loss,
    smoothness_loss,
    unsupervised_flow_loss,
)
from .metrics import end_point_error
from .ops import backward_warp, local_correlation, resize_flow
from .pwc import PWCLite, PWCLiteOutput
from .segments import (
    ClassicalSegments,
    SamSegments,
    SegmentParams,
    SegmentProvider,
    make_segment_provider,
)

__all__ = [
    "ClassicalSegments",
    "DISFlow",
    "FarnebackFlow",
    "FlowLossParams",
    "FlowProvider",
    "FlowProviderParams",
    "NetworkFlow",
    "PWCLite",
    "PWCLiteOutput",
    "SamSegments",
    "SegmentParams",
    "SegmentProvider",
    "backward_warp",
    "census_distance",
    "end_point_error",
    "fit_segment_motion",
    "local_correlation",
    "make_flow_loss",
    "make_flow_provider",
    "make_segment_provider",
    "non_occlusion_mask",
    "photometric_loss",
    "resize_flow",
    "segment_loss",
    "smoothness_loss",
    "unsupervised_flow_loss",
]
