"""Heads of MAFE: coarse-to-fine flow and mask, refinement, and the auxiliary decoders.

Flows follow the project's backward convention: ``flow[:, :2]`` is mid->frame 0 and
``flow[:, 2:]`` mid->frame 1, so ``backward_warp(img0, flow[:, :2]) ~ mid``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution followed by a PReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, H, W) to ``size``; identity when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a flow field (B, 2k, H, W) and rescale its pixel vectors to the new grid."""
    sy, sx = size[0] / flow.shape[-2], size[1] / flow.shape[-1]
    scale = torch.tensor([sx, sy], device=flow.device, dtype=flow.dtype).repeat(flow.shape[1] // 2)
    return resize(flow, size) * scale.view(1, -1, 1, 1)


class FlowHead(nn.Module):
    """One coarse-to-fine step: stage features (+ images, current estimate) -> flow, mask.

    Works at ``stride / 4`` of the input (at least full resolution), as in EMA-VFI's heads:
    the stage features are projected and upsampled to that grid, joined with the images (and,
    after the first head, the warped images, mask and current flow) and decoded to 4 flow
    channels and 1 mask logit, returned at the full (padded) input resolution. ``ctx_ch``
    counts the context channels plus the 4 flow channels when a flow is passed.
    """

    def __init__(self, feat_ch: int, ctx_ch: int, hidden: int, stride: int) -> None:
        super().__init__()
        self.work_stride = max(stride // 4, 1)
        self.proj = conv_act(feat_ch, hidden)
        self.convs = nn.Sequential(
            conv_act(hidden + ctx_ch, hidden),
            conv_act(hidden, hidden),
            nn.Conv2d(hidden, 5, 3, 1, 1),
        )

    def forward(self, feat: Tensor, ctx: Tensor, flow: Tensor | None) -> tuple[Tensor, Tensor]:
        """feat (B, Cf, h, w); ctx (B, Cc, H, W) images (+ mask); flow (B, 4, H, W) or None."""
        full = ctx.shape[-2:]
        work = (full[0] // self.work_stride, full[1] // self.work_stride)
        parts = [resize(self.proj(feat), work), resize(ctx, work)]
        if flow is not None:
            parts.append(resize_flow(flow, work))
        out = self.convs(torch.cat(parts, dim=1))  # (B, 5, h_work, w_work)
        return resize_flow(out[:, :4], full), resize(out[:, 4:5], full)


class RefineNet(nn.Module):
    """Small two-level U-Net predicting a residual in [-1, 1] for the blended middle frame."""

    def __init__(self, in_ch: int, width: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(conv_act(in_ch, width), conv_act(width, width))
        self.down = nn.Sequential(
            conv_act(width, 2 * width, stride=2), conv_act(2 * width, 2 * width)
        )
        self.dec = nn.Sequential(conv_act(3 * width, width), nn.Conv2d(width, 1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) with even H, W -> residual (B, 1, H, W)."""
        skip = self.enc(x)
        deep = resize(self.down(skip), skip.shape[-2:])
        return torch.tanh(self.dec(torch.cat([skip, deep], dim=1)))


class MotionFlowDecoder(nn.Module):
    """Light decoder of the motion features alone into flow (B, 4, H, W), for L_flow.

    Each transformer stage predicts flow on its own grid (in that grid's pixels); the
    predictions are upsampled to the input grid, rescaled to input pixels and summed.
    """

    def __init__(self, motion_chs: list[int], hidden: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(conv_act(2 * c, hidden), nn.Conv2d(hidden, 4, 3, 1, 1))
            for c in motion_chs
        )

    def forward(self, motion: list[Tensor], size: tuple[int, int]) -> Tensor:
        """``motion``: per stage (B, 2 * Cm, h, w) (time-weighted, both frames) -> (B, 4, *size)."""
        flows = [resize_flow(head(m), size) for head, m in zip(self.stages, motion, strict=True)]
        return torch.stack(flows).sum(dim=0)


class AppearanceEmbedding(nn.Module):
    """Pooled appearance features of the last stages -> one embedding per frame, for L_reid."""

    def __init__(self, in_ch: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_ch, in_ch), nn.GELU(), nn.Linear(in_ch, out_dim))

    def forward(self, pooled: Tensor) -> Tensor:
        """``pooled`` (B, 2, in_ch), frame 0 then frame 1 -> (B, 2, out_dim)."""
        return self.mlp(pooled)
