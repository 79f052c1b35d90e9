"""Flow accuracy against ground truth (the phantom's displacement fields)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

Array = np.ndarray | Tensor


def _as_tensor(x: Array) -> Tensor:
    return x.detach().float().cpu() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))


def end_point_error(pred: Array, target: Array, mask: Array | None = None) -> float:
    """Mean end-point error (pixels) between flows (B, 2, H, W) or (2, H, W).

    ``mask`` (B, H, W) / (H, W) boolean, or with a singleton channel axis, restricts the mean
    to its true pixels; NaN when it selects none.
    """
    pred, target = _as_tensor(pred).double(), _as_tensor(target).double()
    if pred.shape != target.shape or pred.shape[-3] != 2:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)}: need equal (..., 2, H, W)"
        )
    epe = torch.linalg.vector_norm(pred - target, dim=-3)  # (..., H, W)
    if mask is None:
        return float(epe.mean())
    mask = _as_tensor(mask).bool()
    if mask.ndim == epe.ndim + 1:
        mask = mask.squeeze(-3)
    mask = mask.expand_as(epe)
    return float(epe[mask].mean()) if mask.any() else float("nan")
