"""MAFE training loss: Laplacian-pyramid L1 interpolation + L_flow + L_reid.

``mafe_loss(model, batch, params)`` reads a batch dict:

- ``img0`` (B, 1, H, W) ED frame, ``img1`` the ES frame, ``gt`` the frame midway, in [0, 1];
- ``flow`` (B, 4, H, W) pseudo flow in pixels, mid->ED then mid->ES (backward warp);
- ``reid`` (B, 2, D) ReID embeddings of the ED and ES frames;
- optionally ``timestep`` (B,) position of ``gt`` between the two frames (0.5 when absent).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echomotion.mafe.params import MAFELossParams

# Binomial 5-tap kernel of the Laplacian pyramid (outer product of [1, 4, 6, 4, 1] / 16).
_TAPS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
CHARBONNIER_EPS = 1e-3


def _gauss(x: Tensor) -> Tensor:
    """Separable 5x5 binomial blur of (B, C, H, W) with reflect padding."""
    c = x.shape[1]
    k = _TAPS.to(x)
    kernel = (k[:, None] * k[None, :]).expand(c, 1, 5, 5)  # (C, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=c)


def laplacian_pyramid(img: Tensor, levels: int) -> list[Tensor]:
    """Band-pass levels of (B, C, H, W) then the low-pass residual; stops while sides are > 4."""
    pyramid = []
    current = img
    for _ in range(levels):
        if min(current.shape[-2:]) <= 4:
            break
        down = _gauss(current)[..., ::2, ::2]
        up = current.new_zeros(*down.shape[:2], 2 * down.shape[-2], 2 * down.shape[-1])
        up[..., ::2, ::2] = 4 * down  # zero insertion; 4x keeps the mean through the blur
        pyramid.append(current - _gauss(up)[..., : current.shape[-2], : current.shape[-1]])
        current = down
    pyramid.append(current)
    return pyramid


def laplacian_l1(pred: Tensor, target: Tensor, levels: int = 5) -> Tensor:
    """Sum over pyramid levels of the mean absolute difference (EMA-VFI's LapLoss)."""
    pairs = zip(laplacian_pyramid(pred, levels), laplacian_pyramid(target, levels), strict=True)
    return sum(F.l1_loss(a, b) for a, b in pairs)


def flow_loss(pred: Tensor, target: Tensor, kind: Literal["l1", "charbonnier"] = "l1") -> Tensor:
    """Mean per-component L1 or Charbonnier distance between flows (B, 4, H, W)."""
    diff = pred - target
    if kind == "l1":
        return diff.abs().mean()
    return (torch.sqrt(diff**2 + CHARBONNIER_EPS**2) - CHARBONNIER_EPS).mean()


def reid_loss(pred: Tensor, target: Tensor, kind: Literal["cosine", "mse"] = "cosine") -> Tensor:
    """1 - cosine similarity (mean over embeddings) or MSE between (B, 2, D) embeddings."""
    if kind == "cosine":
        return (1 - F.cosine_similarity(pred, target, dim=-1)).mean()
    return F.mse_loss(pred, target)


def check_batch(batch: dict[str, Tensor]) -> None:
    """Raise ValueError naming the key when the MAFE batch is incomplete or mis-shaped."""
    missing = {"img0", "img1", "gt", "flow", "reid"} - batch.keys()
    if missing:
        raise ValueError(f"MAFE batch lacks {sorted(missing)}; has {sorted(batch)}")
    b, _, h, w = batch["img0"].shape
    if batch["flow"].shape != (b, 4, h, w):
        raise ValueError(f"flow must be {(b, 4, h, w)}, got {tuple(batch['flow'].shape)}")
    if batch["reid"].ndim != 3 or batch["reid"].shape[:2] != (b, 2):
        raise ValueError(f"reid must be ({b}, 2, D), got {tuple(batch['reid'].shape)}")


def mafe_loss(
    model: nn.Module, batch: dict[str, Tensor], params: MAFELossParams | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Total MAFE loss and its logged terms (interp, coarse, flow, reid: unweighted)."""
    params = params or MAFELossParams()
    check_batch(batch)
    timestep = batch.get("timestep", 0.5)
    out = model(batch["img0"], batch["img1"], timestep)
    interp = laplacian_l1(out["pred"], batch["gt"], params.pyramid_levels)
    coarse = sum(laplacian_l1(m, batch["gt"], params.pyramid_levels) for m in out["merged"])
    l_flow = flow_loss(out["flow_from_motion"], batch["flow"], params.flow_loss)
    l_reid = reid_loss(out["embedding_from_appearance"], batch["reid"], params.reid_loss)
    loss = (
        interp
        + params.coarse_ratio * coarse
        + params.flow_ratio * l_flow
        + params.reid_ratio * l_reid
    )
    logs = {
        "loss": loss.item(),
        "interp": interp.item(),
        "coarse": coarse.item(),
        "flow": l_flow.item(),
        "reid": l_reid.item(),
    }
    return loss, logs
