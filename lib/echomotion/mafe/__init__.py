"""MAFE: motion-appearance feature extractor (EMA-VFI-style inter-frame attention).

``MAFE`` interpolates the middle frame of an ED/ES pair and exposes per-pair motion and
appearance vectors; ``mafe_loss`` trains it on pseudo flow and ReID labels; ``augment_batch``
flips, rotates and time-swaps a batch with its labels transformed consistently.
"""

from echomotion.mafe.augment import MAFEAugmentParams, augment_batch, hflip, rot90, time_swap, vflip
from echomotion.mafe.losses import MAFELossParams, laplacian_l1, mafe_loss
from echomotion.mafe.model import MAFE, PAPER_MAFE, MAFEModelParams

__all__ = [
    "MAFE",
    "PAPER_MAFE",
    "MAFEAugmentParams",
    "MAFELossParams",
    "MAFEModelParams",
    "augment_batch",
    "hflip",
    "laplacian_l1",
    "mafe_loss",
    "rot90",
    "time_swap",
    "vflip",
]
