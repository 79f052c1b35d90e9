"""PWCLite shapes, save/load and a short unsupervised training; flow providers and EPE."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from echomotion.flow.classical import DISFlow, FarnebackFlow, NetworkFlow, make_flow_provider
from echomotion.flow.losses import unsupervised_flow_loss
from echomotion.flow.metrics import end_point_error
from echomotion.flow.params import FlowLossParams, FlowProviderParams
from echomotion.flow.pwc import PWCLite

TINY = {
    "pyramid_channels": (8, 16, 24),
    "max_displacement": 2,
    "feature_channels": 16,
    "estimator_channels": (32, 24),
    "context_channels": (24, 16),
    "context_dilations": (1, 2),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random texture (size, size) float32 in [0.1, 0.9]."""
    t = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
    return 0.1 + 0.8 * (t - t.min()) / (t.max() - t.min())


def affine_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    """Texture a, b = a warped by a random small affine map, and the true flow_ab (2, H, W)."""
    a = texture(rng, size)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-3, 3), rng.uniform(0.97, 1.03))
    m[:, 2] += rng.uniform(-2.5, 2.5, 2)
    b = cv2.warpAffine(a, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    fx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx
    fy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy
    return a, b, np.stack([fx, fy])


def affine_batch(rng: np.random.Generator, n: int, size: int) -> tuple[torch.Tensor, ...]:
    """(img1, img2) (n, 1, size, size) in [0, 1] and the true flow (n, 2, size, size)."""
    a, b, f = zip(*(affine_pair(rng, size) for _ in range(n)), strict=True)
    img1, img2 = (torch.from_numpy(np.stack(x))[:, None] for x in (a, b))
    return img1, img2, torch.from_numpy(np.stack(f)).float()


@pytest.mark.parametrize("size", [(112, 112), (100, 90)])
def test_shapes_at_any_size(size):
    torch.manual_seed(0)
    model = PWCLite()
    out = model(torch.rand(2, 1, *size), torch.rand(2, 1, *size))
    assert out.flow.shape == (2, 2, *size)
    assert len(out.flows) == 1 + len(model.config.pyramid_channels)
    assert out.flows[0] is out.flow
    for level, flow in enumerate(out.flows[1:], start=1):
        stride = 2**level
        assert flow.shape == (2, 2, -(-size[0] // stride), -(-size[1] // stride))


def test_default_size_and_input_checks():
    model = PWCLite()
    assert 1e5 < sum(p.numel() for p in model.parameters()) < 1e6
    with pytest.raises(ValueError, match="differ"):
        model(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 30))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="same length"):
        PWCLite(context_channels=(8, 8), context_dilations=(1,))


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = PWCLite(**TINY)
    with torch.no_grad():  # zero-initialised heads would make any two models agree
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "flow")
    loaded = PWCLite.from_pretrained(tmp_path / "flow")
    assert tuple(loaded.config.pyramid_channels) == TINY["pyramid_channels"]
    x, y = torch.rand(1, 1, 40, 36), torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        expected, got = model(x, y).flow, loaded(x, y).flow
    assert expected.abs().max() > 0
    assert torch.allclose(expected, got)


def test_short_unsupervised_training_lowers_epe():
    torch.manual_seed(0)
    model = PWCLite(**TINY)
    img1, img2, truth = affine_batch(np.random.default_rng(1), 6, 48)

    def epe() -> float:
        with torch.no_grad():
            return end_point_error(model(img1, img2).flow, truth)

    start = epe()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a, b, _ = affine_batch(rng, 4, 48)
        loss, _ = unsupervised_flow_loss(model, {"img1": a, "img2": b}, FlowLossParams())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert epe() < 0.8 * start, (start, epe())


def shifted_texture(dx: float, dy: float, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames a and b = a moved by (dx, dy): b(x) = a(x - t), so flow_ab = +t."""
    a = (texture(np.random.default_rng(3), size) * 255).astype(np.uint8)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    b = cv2.warpAffine(a, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return a[None], b[None]


@pytest.mark.parametrize("provider", [DISFlow("medium"), FarnebackFlow()], ids=["dis", "farneback"])
def test_opencv_flow_follows_the_project_convention(provider):
    a, b = shifted_texture(2.0, -1.0)
    flow = provider(a, b)
    assert flow.shape == (1, 2, 64, 64) and flow.dtype == np.float32
    centre = np.median(flow[0, :, 16:-16, 16:-16].reshape(2, -1), axis=1)
    np.testing.assert_allclose(centre, [2.0, -1.0], atol=0.3)


def test_providers_by_param_and_network_provider():
    assert isinstance(make_flow_provider(FlowProviderParams(method="dis")), DISFlow)
    assert isinstance(make_flow_provider(FlowProviderParams(method="farneback")), FarnebackFlow)
    with pytest.raises(ValueError, match="needs a trained model"):
        make_flow_provider(FlowProviderParams())
    provider = make_flow_provider(FlowProviderParams(batch_size=2), PWCLite(**TINY))
    assert isinstance(provider, NetworkFlow)
    frames = np.random.default_rng(0).integers(0, 255, (3, 30, 26), dtype=np.uint8)
    flow = provider(frames, frames[::-1])
    assert flow.shape == (3, 2, 30, 26) and flow.dtype == np.float32
    with pytest.raises(TypeError, match="uint8"):
        provider(frames.astype(np.float32), frames.astype(np.float32))


def test_end_point_error_all_pixels_and_masked():
    target = np.zeros((2, 2, 4, 5), dtype=np.float32)
    pred = target.copy()
    pred[:, 0, :2] = 3.0
    pred[:, 1, :2] = 4.0  # error 5 on the top two rows
    assert end_point_error(pred, target) == pytest.approx(5 * 2 / 4)
    mask = np.zeros((2, 4, 5), dtype=bool)
    mask[:, :2] = True
    assert end_point_error(pred, target, mask) == pytest.approx(5.0)
    assert end_point_error(torch.from_numpy(pred), target, ~mask) == pytest.approx(0.0)
    assert np.isnan(end_point_error(pred, target, np.zeros_like(mask)))
    with pytest.raises(ValueError, match="need equal"):
        end_point_error(pred, target[:, :, :3])
