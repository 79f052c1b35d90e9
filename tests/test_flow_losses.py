"""Unsupervised flow losses: warping, photometric, occlusion, smoothness, segment guidance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from echomotion.flow.losses import (
    census_distance,
    fit_segment_motion,
    non_occlusion_mask,
    photometric_loss,
    segment_loss,
    smoothness_loss,
    unsupervised_flow_loss,
)
from echomotion.flow.ops import backward_warp
from echomotion.flow.params import FlowLossParams
from echomotion.flow.pwc import PWCLite

pytestmark = pytest.mark.usefixtures("one_thread")


def texture(size: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture (size, size) float32 in [0.1, 0.9]."""
    noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    t = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return 0.1 + 0.8 * (t - t.min()) / (t.max() - t.min())


def as_image(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)[None, None]  # (1, 1, H, W)


def affine_flow(h: int, w: int, m: np.ndarray) -> torch.Tensor:
    """Flow (1, 2, H, W) of x -> m @ [x, y, 1]."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    fx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx
    fy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy
    return torch.from_numpy(np.stack([fx, fy]))[None].float()


def test_warp_zero_flow_is_identity_and_integer_shift_is_exact():
    img = torch.rand(2, 1, 12, 15)
    assert torch.allclose(backward_warp(img, torch.zeros(2, 2, 12, 15)), img, atol=1e-6)
    flow = torch.zeros(2, 2, 12, 15)
    flow[:, 0] = 2.0  # sample two columns to the right
    warped = backward_warp(img, flow)
    assert torch.allclose(warped[..., :-2], img[..., 2:], atol=1e-5)


def test_warp_follows_the_project_convention_on_a_translation():
    a = texture(40)
    m = np.float32([[1, 0, 1.5], [0, 1, -1.0]])
    b = cv2.warpAffine(a, m, (40, 40), flags=cv2.INTER_LINEAR)  # b(x) = a(x - t)
    flow = affine_flow(40, 40, m)  # flow_ab = +t

    def error(f: torch.Tensor) -> float:
        return (backward_warp(as_image(b), f) - as_image(a))[..., 4:-4, 4:-4].abs().mean()

    assert error(flow) < 0.01  # bilinear resampling twice blurs a little
    assert error(-flow) > 5 * error(flow)


def test_photometric_loss_vanishes_for_identical_frames_and_zero_flow():
    img = as_image(texture(32))
    zero = torch.zeros(1, 2, 32, 32)
    assert photometric_loss(img, img, zero, None, FlowLossParams()) < 1e-6
    other = as_image(texture(32, seed=1))
    assert photometric_loss(img, other, zero, None, FlowLossParams()) > 0.1
    assert census_distance(img, other).mean() > 0.1


def test_gradient_descent_on_a_flow_field_recovers_a_subpixel_translation():
    torch.manual_seed(0)
    a = texture(48)
    m = np.float32([[1, 0, 1.3], [0, 1, -0.7]])
    b = cv2.warpAffine(a, m, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    img_a, img_b = as_image(a), as_image(b)
    flow = torch.zeros(1, 2, 48, 48, requires_grad=True)
    opt = torch.optim.Adam([flow], lr=0.1)
    params = FlowLossParams()
    for _ in range(200):
        loss = photometric_loss(img_a, img_b, flow, None, params)
        loss = loss + smoothness_loss(flow, img_a)
        opt.zero_grad()
        loss.backward()
        opt.step()
    inner = flow.detach()[0, :, 8:-8, 8:-8].flatten(1).median(dim=1).values
    assert torch.allclose(inner, torch.tensor([1.3, -0.7]), atol=0.1), inner


def test_occlusion_flags_pixels_leaving_the_frame():
    fw = torch.zeros(1, 2, 10, 20)
    fw[:, 0] = 5.0
    mask = non_occlusion_mask(fw, -fw)[0, 0]
    assert mask[:, :15].all() and not mask[:, 15:].any()


def test_occlusion_flags_forward_backward_inconsistency():
    fw = torch.zeros(1, 2, 10, 20)
    fw[:, 1] = 3.0  # stays inside rows 0..6
    bw = torch.zeros_like(fw)  # does not bring the pixels back
    assert not non_occlusion_mask(fw, bw)[0, 0].any()
    assert non_occlusion_mask(fw, -fw)[0, 0, :7].all()


def test_second_order_smoothness_is_zero_for_affine_flow_only():
    img = as_image(texture(24))
    flow = affine_flow(24, 24, np.float32([[1.1, 0.05, 2.0], [-0.03, 0.95, -1.0]]))
    assert smoothness_loss(flow, img) < 1e-5
    assert smoothness_loss(flow + 0.3 * torch.randn_like(flow), img) > 0.05


def test_first_order_smoothness_is_zero_for_constant_flow_only():
    img = as_image(texture(24))
    constant = torch.ones(1, 2, 24, 24) * torch.tensor([1.5, -0.5]).view(1, 2, 1, 1)
    affine = affine_flow(24, 24, np.float32([[1.1, 0.05, 2.0], [-0.03, 0.95, -1.0]]))
    assert smoothness_loss(constant, img, order=1) < 1e-6
    assert smoothness_loss(affine, img, order=1) > 0.01  # 2nd order: zero (test above)
    with pytest.raises(ValueError, match="order"):
        smoothness_loss(constant, img, order=3)


def two_segments(h: int = 30, w: int = 40) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Label map with two segments and a 0 border, and a piecewise-affine flow on it."""
    seg = torch.zeros(1, h, w, dtype=torch.long)
    seg[:, 2:-2, 2 : w // 2] = 1
    seg[:, 2:-2, w // 2 : -2] = 2
    ms = [
        np.float32([[1.05, 0.1, -1.0], [0.02, 0.9, 2.0]]),
        np.float32([[0.97, -0.05, 3.0], [0.0, 1.02, -0.5]]),
    ]
    flow = torch.randn(1, 2, h, w)  # label 0 keeps noise
    for k, m in enumerate(ms, start=1):
        flow = torch.where(seg[:, None] == k, affine_flow(h, w, m), flow)
    return seg, flow, ms


def test_segment_affine_fit_recovers_each_segments_motion_exactly():
    seg, flow, _ = two_segments()
    fitted, member = fit_segment_motion(flow, seg)
    inside = member[0, 0].bool()
    assert torch.equal(inside, seg[0] > 0)
    assert torch.allclose(fitted[0][:, inside], flow[0][:, inside], atol=1e-3)
    assert segment_loss(flow, seg) < 1e-2
    assert segment_loss(flow + 0.5 * torch.randn_like(flow), seg) > 0.2


def test_segment_fit_ignores_masked_pixels_and_small_segments():
    seg, flow, _ = two_segments()
    weights = torch.ones(1, 1, *seg.shape[-2:])
    corrupted = flow.clone()
    corrupted[:, :, 5:10, 5:10] += 20.0  # outliers, flagged as occluded
    weights[:, :, 5:10, 5:10] = 0
    fitted, _ = fit_segment_motion(corrupted, seg, weights)
    assert torch.allclose(fitted[:, :, 5:10, 5:10], flow[:, :, 5:10, 5:10], atol=1e-3)
    _, member = fit_segment_motion(flow, seg, min_pixels=10_000)
    assert member.sum() == 0


def test_segment_homography_fit_recovers_a_projective_motion():
    h, w = 30, 40
    hom = np.array([[1.02, 0.03, 1.0], [-0.02, 0.98, -2.0], [4e-4, -3e-4, 1.0]])
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    q = np.tensordot(hom, np.stack([xx, yy, np.ones_like(xx)]), axes=1)
    flow = torch.from_numpy(np.stack([q[0] / q[2] - xx, q[1] / q[2] - yy]))[None].float()
    seg = torch.ones(1, h, w, dtype=torch.long)
    fitted, _ = fit_segment_motion(flow, seg, model="homography")
    assert (fitted - flow).abs().max() < 0.05
    affine, _ = fit_segment_motion(flow, seg, model="affine")
    assert (affine - flow).abs().max() > 0.1  # the projective part is not affine


def tiny_net() -> PWCLite:
    widths = {"estimator_channels": (16,), "context_channels": (8,), "context_dilations": (1,)}
    return PWCLite(pyramid_channels=(8, 16), max_displacement=1, feature_channels=8, **widths)


def test_unsupervised_loss_runs_both_directions_and_backpropagates():
    torch.manual_seed(0)
    model = tiny_net()
    img1, img2 = torch.rand(2, 1, 20, 28), torch.rand(2, 1, 20, 28)
    seg = torch.randint(0, 3, (2, 20, 28))
    batch = {"img1": img1, "img2": img2, "segments1": seg, "segments2": seg}
    loss, logs = unsupervised_flow_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and logs["loss"] == pytest.approx(loss.item())
    assert set(logs) == {"loss", "photometric", "smooth", "segment", "non_occluded"}
    assert all(p.grad is not None for p in model.parameters())
    no_seg, _ = unsupervised_flow_loss(model, {"img1": img1, "img2": img2})
    zero_w, _ = unsupervised_flow_loss(model, batch, FlowLossParams(w_segment=0.0))
    assert torch.isclose(no_seg, zero_w)


def test_loss_params_validate():
    with pytest.raises(ValidationError, match="odd"):
        FlowLossParams(census_patch=6)
    with pytest.raises(ValidationError):
        FlowLossParams(w_smoth=1.0)
    with pytest.raises(ValidationError):
        FlowLossParams(segment_model="spline")
