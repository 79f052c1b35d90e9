"""Unsupervised optical-flow losses (UnFlow / ARFlow / UnSAMFlow recipe).

* photometric: census (ternary) distance plus ``0.15 * L1 + 0.85 * SSIM`` between frame 1 and
  frame 2 warped back by the flow, averaged over non-occluded pixels;
* occlusion: forward-backward consistency (Meister et al., UnFlow) plus out-of-frame pixels;
* smoothness: edge-aware second-order (zero for any affine flow) or first-order;
* segment guidance: in each segment, a parametric motion (affine or homography) is fitted to the
  flow on non-occluded pixels (least squares, or RANSAC then a refit on its inliers) and the
  flow is pulled towards the fit over the whole segment (UnSAMFlow's per-segment homography
  smoothness, with SAM or classical segments);
* augmentation regulariser (ARFlow's spatial-transform self-supervision): the flow of a
  randomly transformed pair is pulled towards the transformed (detached) flow of the pair;
* a schedule of loss weights by optimizer step (UnSAMFlow's stages), the step read from a
  counter buffer on the model, so a resumed run continues the same schedule.

All images are (B, 1, H, W) in [0, 1]; flows follow the convention of :mod:`.ops`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echomotion.flow.augment import transform_pair
from echomotion.flow.ops import backward_warp, inside_frame, pixel_grid, resize_image
from echomotion.flow.params import FlowLossParams, LossStage

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


def _dlt_homographies(src: Tensor, dst: Tensor) -> Tensor:
    """Homographies (..., 3, 3) mapping 4 points ``src`` (..., 4, 3) homogeneous onto ``dst``
    (..., 4, 2): smallest eigenvector of the DLT system."""
    zeros = torch.zeros_like(src)
    rows_u = torch.cat([-src, zeros, dst[..., :1] * src], -1)  # (..., 4, 9)
    rows_v = torch.cat([zeros, -src, dst[..., 1:] * src], -1)
    rows = torch.cat([rows_u, rows_v], -2)  # (..., 8, 9)
    return torch.linalg.eigh(rows.transpose(-1, -2) @ rows)[1][..., 0].unflatten(-1, (3, 3))


def _pixel_errors(hom: Tensor, coords: Tensor, target: Tensor, label: Tensor, scale: Tensor):
    """Transfer error (B, N) in pixels of each pixel under its segment's homography.

    ``hom`` (B, K, 3, 3), ``target`` (B, N, 2) normalized, ``label`` (B, N) in [0, K).
    """
    per_pixel = hom.gather(1, label[..., None, None].expand(-1, -1, 3, 3))  # (B, N, 3, 3)
    proj = torch.einsum("bnij,nj->bni", per_pixel, coords)
    denom = proj[..., 2:]
    denom = torch.where(denom.abs() < 1e-6, torch.full_like(denom, 1e-6), denom)
    err = (proj[..., :2] / denom - target) / scale
    return err.pow(2).sum(-1).sqrt().nan_to_num(nan=float("inf"))


def _ransac_weights(
    coords: Tensor,
    flow_n: Tensor,
    scale: Tensor,
    w_fit: Tensor,
    threshold: float,
    iterations: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """RANSAC for one homography per segment: ``w_fit`` restricted to the inliers of the best
    minimal sample (B, K, N), and the inlier share (B, K) of each segment's fitted pixels.

    Minimal samples (4 pixels) are drawn from each segment's pixels with ``generator``;
    ``threshold`` is the transfer error in pixels (cv2.findHomography's ransacReprojThreshold).
    """
    b, k, n = w_fit.shape
    valid = (w_fit > 0).to(w_fit.dtype)  # (B, K, N)
    label = (valid * torch.arange(k, device=w_fit.device).view(1, k, 1)).sum(1).long()  # (B, N)
    target = coords[None, :, :2] + flow_n.transpose(1, 2)  # (B, N, 2)
    # 1. minimal samples: 4 pixels per segment and iteration (empty segments: any pixels)
    probs = valid.reshape(b * k, n)
    probs = torch.where(probs.sum(-1, keepdim=True) > 0, probs, torch.ones_like(probs))
    idx = torch.multinomial(probs, 4 * iterations, replacement=True, generator=generator)
    idx = idx.view(b, k, iterations, 4)
    src = coords[idx]  # (B, K, I, 4, 3)
    dst = target.gather(1, idx.reshape(b, -1, 1).expand(-1, -1, 2)).view(*idx.shape, 2)
    hom = _dlt_homographies(src, dst)  # (B, K, I, 3, 3)
    # 2. keep each segment's sample with the most inliers
    best = hom[:, :, 0]
    best_count = torch.full((b, k), -1.0, device=w_fit.device, dtype=w_fit.dtype)
    for i in range(iterations):
        inlier = _pixel_errors(hom[:, :, i], coords, target, label, scale) < threshold
        count = torch.einsum("bkn,bn->bk", valid, inlier.to(valid.dtype))
        better = count > best_count
        best = torch.where(better[..., None, None], hom[:, :, i], best)
        best_count = torch.where(better, count, best_count)
    inlier = _pixel_errors(best, coords, target, label, scale) < threshold  # (B, N)
    share = best_count / valid.sum(-1).clamp_min(1.0)
    return w_fit * inlier[:, None].to(w_fit.dtype), share


# A RANSAC homography with fewer inliers than this share of the segment is not used
# (UnSAMFlow losses/loss_blocks.py smooth_homography: `mask.mean() < 0.5`).
RANSAC_MIN_INLIER_SHARE = 0.5


@torch.no_grad()
def fit_segment_motion(
    flow: Tensor,
    segments: Tensor,
    weights: Tensor | None = None,
    model: Literal["affine", "homography"] = "affine",
    min_pixels: int = 16,
    ransac_threshold: float | None = None,
    ransac_iterations: int = 100,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Fit one parametric motion per segment to ``flow`` (B, 2, H, W).

    ``segments`` (B, H, W) integer labels, 0 = ignore; ``weights`` (B, 1, H, W) (e.g. the
    non-occlusion mask) selects the pixels the fit uses. Returns the fitted flow (B, 2, H, W)
    and a mask (B, 1, H, W) of the pixels of segments with at least ``min_pixels`` weight.
    With ``ransac_threshold`` (homography only) the fit uses the inliers of a RANSAC search
    (samples drawn with ``generator``, default: torch's global RNG), and segments with under
    half inliers are left out.
    """
    # 1. one-hot segments and fitting weights, in float32 (linalg has no half precision,
    # so autocast, which would run the products in half, is off here)
    with torch.autocast(flow.device.type, enabled=False):
        fit = (model, min_pixels, ransac_threshold, ransac_iterations, generator)
        return _fit_segment_motion(flow, segments, weights, *fit)


def _fit_segment_motion(
    flow: Tensor,
    segments: Tensor,
    weights: Tensor | None,
    model: Literal["affine", "homography"],
    min_pixels: int,
    ransac_threshold: float | None,
    ransac_iterations: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """:func:`fit_segment_motion` without autocast."""
    b, _, h, w = flow.shape
    dtype, flow = flow.dtype, flow.float()
    weights = torch.ones_like(flow[:, :1]) if weights is None else weights.float()
    onehot, w_fit = _segment_weights(segments, weights)

    # 2. fit in coordinates normalized to [-1, 1] (well-conditioned normal equations)
    coords, scale = _normalized_coords(flow)
    flow_n = flow.reshape(b, 2, -1) * scale.view(1, 2, 1)  # (B, 2, N), normalized units
    keep = torch.ones_like(w_fit[..., :1])  # (B, K, 1)
    if ransac_threshold is not None:
        if model != "homography":
            raise ValueError(f"RANSAC fits homographies only, got model '{model}'")
        ransac = (ransac_threshold, ransac_iterations, generator)
        w_fit, share = _ransac_weights(coords, flow_n, scale, w_fit, *ransac)
        keep = (share >= RANSAC_MIN_INLIER_SHARE).to(w_fit.dtype)[..., None]
    fit = _fit_affine if model == "affine" else _fit_homography
    fitted_n = fit(coords, flow_n, w_fit)  # (B, K, 2, N)

    # 3. scatter each large-enough segment's fit back to its pixels, in pixels
    member = onehot * (w_fit.sum(-1, keepdim=True) >= min_pixels)  # (B, K, N)
    if ransac_threshold is not None:
        member = member * keep
    fitted = torch.einsum("bkn,bkcn->bcn", member, fitted_n) / scale.view(1, 2, 1)
    fitted, member = fitted.reshape(b, 2, h, w), member.sum(1).reshape(b, 1, h, w)
    return fitted.to(dtype), member.to(dtype)


def segment_loss(
    flow: Tensor,
    segments: Tensor,
    weights: Tensor | None = None,
    model: Literal["affine", "homography"] = "affine",
    min_pixels: int = 16,
    ransac_threshold: float | None = None,
    ransac_iterations: int = 100,
) -> Tensor:
    """Mean end-point distance between ``flow`` and its per-segment fit, over fitted segments."""
    fit = (model, min_pixels, ransac_threshold, ransac_iterations)
    fitted, member = fit_segment_motion(flow, segments, weights, *fit)
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
    if not params.photometric_occlusion:
        mask_fw = mask_bw = None
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
    fit_masks = (mask_fw, mask_bw) if params.photometric_occlusion else (None, None)
    for key, flow, mask in zip(("segments1", "segments2"), (fw, bw), fit_masks, strict=True):
        if key in batch and params.w_segment:
            fit = (params.segment_model, params.segment_min_pixels)
            ransac = (params.ransac_threshold, params.ransac_iterations)
            seg = seg + segment_loss(flow, batch[key], mask, *fit, *ransac)

    # 4. total, with the augmentation regulariser when it is on
    loss = photo + params.w_smooth * smooth + params.w_segment * seg
    logs = {"photometric": photo.item(), "smooth": smooth.item(), "segment": seg.item()}
    if params.w_ar:
        ar = augmentation_loss(model, img1, img2, fw.detach(), mask_fw, params)
        loss = loss + params.w_ar * ar
        logs["ar"] = ar.item()
    return loss, {"loss": loss.item(), **logs, "non_occluded": mask_fw.mean().item()}


def augmentation_loss(
    model: nn.Module,
    img1: Tensor,
    img2: Tensor,
    flow: Tensor,
    mask: Tensor,
    params: FlowLossParams,
) -> Tensor:
    """ARFlow's spatial-transform regulariser (UnSAMFlow ``run_st``): mean L1 between the
    flow the network gives a randomly transformed pair and the transformed ``flow`` (the
    detached flow_12 of the pair), over the transformed non-occluded ``mask`` (all valid
    view pixels without ``ar_mask``). Draws from torch's global RNG."""
    mask = mask if params.ar_mask else torch.ones_like(mask)
    with torch.autocast(img1.device.type, enabled=False):  # matrix inverses in float32
        pair = (img1.float(), img2.float(), flow.float(), mask.float())
        view1, view2, target, valid = transform_pair(*pair, params.ar_transform)
    pred = model(view1, view2).flows[0]
    return ((pred - target).abs() * valid).mean() / (valid.mean() + 1e-7)


# ---------------------------------------------------------------- schedule

# Buffer on the model counting loss calls (micro-batches), saved with its weights: the
# schedule's step survives a resume because the checkpoint restores it.
STEP_BUFFER = "loss_micro_steps"


def loss_params_at(base: FlowLossParams, schedule: Sequence[LossStage], step: int):
    """``base`` with the weights of every stage that has started by ``step``, in order."""
    update: dict[str, float] = {}
    for stage in schedule:
        if stage.from_step <= step:
            update |= stage.model_dump(exclude={"from_step"}, exclude_none=True)
    return base.model_copy(update=update) if update else base


def attach_step_counter(model: nn.Module) -> None:
    """Give ``model`` the int64 counter buffer that a scheduled loss reads and advances."""
    if not hasattr(model, STEP_BUFFER):
        model.register_buffer(STEP_BUFFER, torch.zeros((), dtype=torch.int64))


def _counter(model: nn.Module) -> Tensor:
    """The counter buffer of ``model`` (unwrapping DDP / compile wrappers)."""
    for candidate in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        if candidate is not None and hasattr(candidate, STEP_BUFFER):
            return getattr(candidate, STEP_BUFFER)
    raise AttributeError(f"the model has no '{STEP_BUFFER}' buffer: call attach_step_counter")


def make_flow_loss(
    params: FlowLossParams, schedule: Sequence[LossStage] = (), grad_accum: int = 1
) -> LossFn:
    """``loss_fn(model, batch)`` for the shared training loop, bound to ``params``.

    With a ``schedule``, the model needs :func:`attach_step_counter`; the optimizer step is
    the number of earlier calls divided by ``grad_accum``, and the curve gets an ``ar``
    column from the start (0 while the regulariser is off) when some stage turns it on.
    """
    if not schedule:
        return functools.partial(unsupervised_flow_loss, params=params)
    with_ar = bool(params.w_ar) or any(stage.w_ar for stage in schedule)

    def loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        counter = _counter(model)
        step = int(counter.item()) // grad_accum
        with torch.no_grad():
            counter += 1
        loss, logs = unsupervised_flow_loss(model, batch, loss_params_at(params, schedule, step))
        return loss, ({"ar": 0.0} | logs if with_ar else logs)

    return loss_fn
