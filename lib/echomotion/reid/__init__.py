"""ReID appearance network (identity = video): model, losses, P x K sampler, metrics."""

from echomotion.reid.dataset import FrameIdentityDataset
from echomotion.reid.losses import (
    ReIDLossParams,
    batch_hard_triplet_loss,
    label_smoothed_cross_entropy,
    reid_loss,
)
from echomotion.reid.metrics import expected_random_ap, rank1_and_map
from echomotion.reid.model import ReIDEncoder
from echomotion.reid.sampler import PKBatchSampler

__all__ = [
    "FrameIdentityDataset",
    "PKBatchSampler",
    "ReIDEncoder",
    "ReIDLossParams",
    "batch_hard_triplet_loss",
    "expected_random_ap",
    "label_smoothed_cross_entropy",
    "rank1_and_map",
    "reid_loss",
]
