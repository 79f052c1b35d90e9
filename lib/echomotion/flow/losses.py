"""Unsupervised optical-flow losses (UnFlow / ARFlow / UnSAMFlow recipe).

* photometric: census (ternary) distance plus ``0.15 * L1 + 0.85 * SSIM`` between frame 1 and
  frame 2 warped back by the flow, averaged over non-occluded pixels;
* occlusion: forward-backward consistency (Meister et al., UnFlow) plus out-of-frame pixels;
* smoothness: edge-aware second-order (zero for any affine flow) or first-order;
* segment guidance: in each segment, a parametric motion (affine or homography) is fitted to the
  flow on non-occluded pixels and the flow is pulled towards the fit over the whole segment
  (UnSAMFlow's per-segment homography smoothness, with SAM or classical segments).

All images are (B, 1, H, W) in [0, 1]; flows follow the convention of :mod:`.ops`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import backward_warp, inside_frame, pixel_grid, resize_image
from .params import FlowLossParams

LossFn = Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, dict[str, float]]]


# ---------------------------------------------------------------- photometric


def census_transform(img: Tensor, patch: int) -> Tensor:
    """Soft ternary signature (B, C*patch^2, H, W) of ``img`` in [0, 1] (UnFlow constants)."""
    b, c, h, w = img.shape
    r = patch // 2
    x = img * 255.0
    neigh = F.unfold(F.pad(x, (r, r, r, r), mode="replicate"), patch)  # (B, C*p*p, H*W)
    diff = neigh.view(b, c, patch * patch, h, w) - x.unsqueeze(2)  # (B, C, p*p, H, W)
    return (diff / torch.sqrt(0.81 + diff**2)).view(b, c * patch * patch, h, w)


def census_distance(img_a: Tensor, img_b: Tensor, patch: int = 7) -> Tensor:
    """Per-pixel soft Hamming distance (B, 1, H, W) in [0, 1) between census signatures."""
    d = (census_transform(img_a, patch) - census_transform(img_b, patch)) ** 2
    return (d / (0.1 + d)).mean(dim=1, keepdim=True)


def ssim_distance(x: Tensor, y: Tensor) -> Tensor:
    """Per-pixel (1 - SSIM) / 2 over 3x3 windows, (B, C, H, W) in [0, 1]."""
    c1, c2 = 0.01**2, 0.03**2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    var_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    var_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    cov = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return ((1 - num / den) / 2).clamp(0, 1)


def photometric_map(img1: Tensor, img2_warped: Tensor, params: FlowLossParams) -> Tensor:
    """Weighted sum (B, 1, H, W) of the census, L1 and SSIM distances."""
    out = torch.zeros_like(img1[:, :1])
    if params.w_census:
        out = out + params.w_census * census_distance(img1, img2_warped, params.census_patch)
    if params.w_l1:
        out = out + params.w_l1 * (img1 - img2_warped).abs().mean(1, keepdim=True)
    if params.w_ssim:
        out = out + params.w_ssim * ssim_distance(img1, img2_warped).mean(1, keepdim=True)
    return out


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over pixels where ``mask`` (broadcastable) is set; 0 if none."""
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1e-6)


def photometric_loss(
    img1: Tensor, img2: Tensor, flow: Tensor, mask: Tensor | None, params: FlowLossParams
) -> Tensor:
    """Photometric loss of ``flow`` = flow_12 over the pixels where ``mask`` (B, 1, H, W) is 1."""
    diff = photometric_map(img1, backward_warp(img2, flow), params)
    return masked_mean(diff, torch.ones_like(diff) if mask is None else mask)


# ---------------------------------------------------------------- occlusion


def non_occlusion_mask(
    flow_fw: Tensor, flow_bw: Tensor, alpha1: float = 0.01, alpha2: float = 0.5
) -> Tensor:
    """Float mask (B, 1, H, W), 1 = visible in both frames, for ``flow_fw`` = flow_12.

    A pixel is occluded when it leaves the frame or when the backward flow at its target does
    not bring it back: ``|f + b(x+f)|^2 >= alpha1 (|f|^2 + |b(x+f)|^2) + alpha2`` (UnFlow).
    """
    bw_at_target = backward_warp(flow_bw, flow_fw)
    gap = (flow_fw + bw_at_target).pow(2).sum(1, keepdim=True)
    bound = alpha1 * (flow_fw.pow(2).sum(1, keepdim=True) + bw_at_target.pow(2).sum(1, True))
    consistent = (gap < bound + alpha2).to(flow_fw.dtype)
    return consistent * inside_frame(flow_fw)


# ---------------------------------------------------------------- smoothness


def smoothness_loss(flow: Tensor, img: Tensor, edge_alpha: float = 10.0, order: int = 2) -> Tensor:
    """Edge-aware smoothness: mean ``exp(-alpha |dI|) |d^k flow|`` along x and y.

    ``order`` 2 (ARFlow) is zero for any affine flow; ``order`` 1 (UnFlow's first-order
    term) is zero only for a constant flow and fills textureless regions by harmonic
    interpolation of their borders, without the linear extrapolation of order 2.
    """
    if order not in (1, 2):
        raise ValueError(f"smoothness order must be 1 or 2, got {order}")
    if order == 1:
        dx = flow[..., :, 1:] - flow[..., :, :-1]  # (B, 2, H, W-1)
        dy = flow[..., 1:, :] - flow[..., :-1, :]  # (B, 2, H-1, W)
    else:
        dx = flow[..., :, 2:] - 2 * flow[..., :, 1:-1] + flow[..., :, :-2]  # (B, 2, H, W-2)
        dy = flow[..., 2:, :] - 2 * flow[..., 1:-1, :] + flow[..., :-2, :]  # (B, 2, H-2, W)
    gx = (img[..., :, 1:] - img[..., :, :-1]).abs().mean(1, keepdim=True)  # (B, 1, H, W-1)
    gy = (img[..., 1:, :] - img[..., :-1, :]).abs().mean(1, keepdim=True)  # (B, 1, H-1, W)
    if order == 2:  # weight at the centre pixel's right / lower edge
        gx, gy = gx[..., :, 1:], gy[..., 1:, :]
    wx, wy = torch.exp(-edge_alpha * gx), torch.exp(-edge_alpha * gy)
    return (wx * dx.abs()).mean() / 2 + (wy * dy.abs()).mean() / 2


# ---------------------------------------------------------------- segment guidance


def _segment_weights(segments: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """One-hot of labels 1..K (B, K, N) and the same restricted to ``weights`` (B, K, N)."""
    b = segments.shape[0]
    n_labels = int(segments.max().item()) + 1
    onehot = F.one_hot(segments.reshape(b, -1).long(), max(n_labels, 2))  # (B, N, K+1)
    onehot = onehot.permute(0, 2, 1)[:, 1:].to(weights.dtype)  # (B, K, N), label 0 dropped
    return onehot, onehot * weights.reshape(b, 1, -1)


def _normalized_coords(flow: Tensor) -> tuple[Tensor, Tensor]:
    """Homogeneous pixel coordinates scaled to [-1, 1] (N, 3) and the scale (2,) per axis."""
    h, w = flow.shape[-2:]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=flow.dtype)
    scale = scale.to(flow.device)
    xy = pixel_grid(flow)[0].reshape(2, -1).T * scale - 1.0  # (N, 2)
    return torch.cat([xy, torch.ones_like(xy[:, :1])], 1), scale


def _fit_affine(coords: Tensor, flow_n: Tensor, w: Tensor) -> Tensor:
    """Per-segment affine flow by weighted least squares; returns the fitted flow (B, K, 2, N)."""
    gram = torch.einsum("bkn,ni,nj->bkij", w, coords, coords)  # (B, K, 3, 3)
    rhs = torch.einsum("bkn,ni,bcn->bkic", w, coords, flow_n)  # (B, K, 3, 2)
    ridge = 1e-6 * w.sum(-1).clamp_min(1.0)[..., None, None] * torch.eye(3, device=w.device)
    coef = torch.linalg.solve(gram + ridge, rhs)  # (B, K, 3, 2)
    return torch.einsum("ni,bkic->bkcn", coords, coef)


def _fit_homography(coords: Tensor, flow_n: Tensor, w: Tensor) -> Tensor:
    """Per-segment homography by weighted DLT (smallest eigenvector); fitted flow (B, K, 2, N)."""
    target = coords[None, :, :2] + flow_n.transpose(1, 2)  # (B, N, 2)
    p = coords.expand(target.shape[0], -1, -1)  # (B, N, 3)
    zeros = torch.zeros_like(p)
    rows_u = torch.cat([-p, zeros, target[..., :1] * p], -1)  # (B, N, 9)
    rows_v = torch.cat([zeros, -p, target[..., 1:] * p], -1)
    scatter = torch.einsum("bkn,bni,bnj->bkij", w, rows_u, rows_u)
    scatter = scatter + torch.einsum("bkn,bni,bnj->bkij", w, rows_v, rows_v)
    scatter = scatter / w.sum(-1).clamp_min(1e-6)[..., None, None]  # (B, K, 9, 9)
    hom = torch.linalg.eigh(scatter)[1][..., 0].reshape(*scatter.shape[:2], 3, 3)
    proj = torch.einsum("bkij,nj->bkin", hom, coords)  # (B, K, 3, N)
    denom = proj[:, :, 2:]
    denom = torch.where(denom.abs() < 1e-6, torch.full_like(denom, 1e-6), denom)
    return proj[:, :, :2] / denom - coords.T[None, None, :2]


@torch.no_grad()
def fit_segment_motion(
    flow: Tensor,
    segments: Tensor,
    weights: Tensor | None = None,
    model: Literal["affine", "homography"] = "affine",
    min_pixels: int = 16,
) -> tuple[Tensor, Tensor]:
    """Fit one parametric motion per segment to ``flow`` (B, 2, H, W).

    ``segments`` (B, H, W) integer labels, 0 = ignore; ``weights`` (B, 1, H, W) (e.g. the
    non-occlusion mask) selects the pixels the fit uses. Returns the fitted flow (B, 2, H, W)
    and a mask (B, 1, H, W) of the pixels of segments with at least ``min_pixels`` weight.
    """
    # 1. one-hot segments and fitting weights, in float32 (linalg has no half precision)
    b, _, h, w = flow.shape
    dtype, flow = flow.dtype, flow.float()
    weights = torch.ones_like(flow[:, :1]) if weights is None else weights.float()
    onehot, w_fit = _segment_weights(segments, weights)

    # 2. fit in coordinates normalized to [-1, 1] (well-conditioned normal equations)
    coords, scale = _normalized_coords(flow)
    flow_n = flow.reshape(b, 2, -1) * scale.view(1, 2, 1)  # (B, 2, N), normalized units
    fit = _fit_affine if model == "affine" else _fit_homography
    fitted_n = fit(coords, flow_n, w_fit)  # (B, K, 2, N)

    # 3. scatter each large-enough segment's fit back to its pixels, in pixels
    member = onehot * (w_fit.sum(-1, keepdim=True) >= min_pixels)  # (B, K, N)
    fitted = torch.einsum("bkn,bkcn->bcn", member, fitted_n) / scale.view(1, 2, 1)
    fitted, member = fitted.reshape(b, 2, h, w), member.sum(1).reshape(b, 1, h, w)
    return fitted.to(dtype), member.to(dtype)


def segment_loss(
    flow: Tensor,
    segments: Tensor,
    weights: Tensor | None = None,
    model: Literal["affine", "homography"] = "affine",
    min_pixels: int = 16,
) -> Tensor:
    """Mean end-point distance between ``flow`` and its per-segment fit, over fitted segments."""
    fitted, member = fit_segment_motion(flow, segments, weights, model, min_pixels)
    dist = torch.sqrt((flow - fitted).pow(2).sum(1, keepdim=True) + 1e-6) - 1e-3  # smooth at 0
    return masked_mean(dist, member)


# ---------------------------------------------------------------- combined


def _bidirectional_flows(model: nn.Module, img1: Tensor, img2: Tensor) -> list[tuple]:
    """Forward and backward flows at every scale: [(flow_12, flow_21), ...], finest first."""
    out = model(torch.cat([img1, img2], 0), torch.cat([img2, img1], 0))
    return [flow.chunk(2, dim=0) for flow in out.flows]


def occlusion_masks(fw: Tensor, bw: Tensor, params: FlowLossParams) -> tuple[Tensor, Tensor]:
    """Non-occlusion masks (B, 1, H, W) of both directions (all ones if occlusion is off)."""
    if not params.occlusion:
        ones = torch.ones_like(fw[:, :1])
        return ones, ones
    fw, bw, occ = fw.detach(), bw.detach(), (params.occ_alpha1, params.occ_alpha2)
    return non_occlusion_mask(fw, bw, *occ), non_occlusion_mask(bw, fw, *occ)


def _level_photometric(
    img1: Tensor, img2: Tensor, fw: Tensor, bw: Tensor, params: FlowLossParams
) -> Tensor:
    """Occlusion-masked photometric loss of both directions at the scale of ``fw``."""
    im1, im2 = resize_image(img1, fw.shape[-2:]), resize_image(img2, fw.shape[-2:])
    mask_fw, mask_bw = occlusion_masks(fw, bw, params)
    loss = photometric_loss(im1, im2, fw, mask_fw, params)
    return (loss + photometric_loss(im2, im1, bw, mask_bw, params)) / 2


def unsupervised_flow_loss(
    model: nn.Module, batch: dict[str, Tensor], params: FlowLossParams | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Unsupervised loss of a flow network on a batch of frame pairs.

    ``batch``: "img1", "img2" (B, 1, H, W) in [0, 1]; optional "segments1", "segments2"
    (B, H, W) integer label maps (0 = ignore) of each frame. Returns (loss, logs).
    """
    # 1. forward and backward flows at every scale
    params = params or FlowLossParams()
    img1, img2 = batch["img1"], batch["img2"]
    flows = _bidirectional_flows(model, img1, img2)

    # 2. occlusion-masked photometric loss per scale
    photo = img1.new_zeros(())
    for weight, (fw, bw) in zip(params.pyramid_weights, flows, strict=False):  # extra: unused
        if weight:
            photo = photo + weight * _level_photometric(img1, img2, fw, bw, params)

    # 3. full-resolution smoothness and segment guidance
    (fw, bw), alpha = flows[0], params.edge_alpha
    mask_fw, mask_bw = occlusion_masks(fw, bw, params)
    order = params.smooth_order
    smooth = (smoothness_loss(fw, img1, alpha, order) + smoothness_loss(bw, img2, alpha, order)) / 2
    seg = img1.new_zeros(())
    for key, flow, mask in (("segments1", fw, mask_fw), ("segments2", bw, mask_bw)):
        if key in batch and params.w_segment:
            fit = (params.segment_model, params.segment_min_pixels)
            seg = seg + segment_loss(flow, batch[key], mask, *fit)

    # 4. total
    loss = photo + params.w_smooth * smooth + params.w_segment * seg
    logs = {"photometric": photo.item(), "smooth": smooth.item(), "segment": seg.item()}
    return loss, {"loss": loss.item(), **logs, "non_occluded": mask_fw.mean().item()}


def make_flow_loss(params: FlowLossParams) -> LossFn:
    """``loss_fn(model, batch)`` for the shared training loop, bound to ``params``."""
    return functools.partial(unsupervised_flow_loss, params=params)
