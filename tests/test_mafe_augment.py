"""MAFE augmentations keep the pseudo flow consistent with the transformed frames.

A textured pair with a known affine flow is built analytically, so ``warp(img0, flow_mid0)``
reproduces the middle frame up to bilinear sampling error. After every transform, the
transformed flow must still warp the transformed frames onto the transformed middle frame,
and the untransformed flow must not.
"""

from __future__ import annotations

import math

import pytest
import torch

from echomotion.flow.ops import backward_warp
from echomotion.mafe.augment import augment_batch, hflip, rot90, time_swap, vflip
from echomotion.mafe.params import MAFEAugmentParams

SIZE = 40
CROP = 6  # border where x + flow(x) may leave the frame


def texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smooth, non-symmetric test pattern in [0, 1] (wavelengths >= 13 px)."""
    return 0.5 + 0.2 * torch.sin(0.45 * x + 0.2 * y) + 0.15 * torch.cos(0.3 * y - 0.12 * x + 1.0)


def affine_pair(matrix: list[list[float]], shift: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(frame, flow_mid_to_frame) with flow(p) = M (p - C) + c and warp(frame, flow) ~ texture."""
    m, c = torch.tensor(matrix), torch.tensor(shift)
    centre = (SIZE - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    p = torch.stack([xs, ys], -1).float() - centre  # (H, W, 2) centred (x, y)
    flow = p @ m.T + c  # (H, W, 2)
    # frame(q) = texture(psi(q)), psi(q) = (I + M)^-1 (q - C - c) + C inverts p -> p + flow(p)
    src = (p - c) @ torch.linalg.inv(torch.eye(2) + m).T + centre
    frame = texture(src[..., 0], src[..., 1])
    return frame[None, None], flow.permute(2, 0, 1)[None]  # (1, 1, H, W), (1, 2, H, W)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """One analytic sample: ED, ES, the middle frame, flow mid->ED|mid->ES, ReID rows."""
    img0, f0 = affine_pair([[0.06, -0.03], [0.04, 0.02]], [2.5, -1.5])
    img1, f1 = affine_pair([[-0.05, 0.02], [0.03, -0.04]], [-2.0, 1.0])
    ys, xs = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    mid = texture(xs.float(), ys.float())[None, None]
    reid = torch.stack([torch.ones(4), -torch.ones(4)])[None]  # (1, 2, 4)
    return {
        "img0": img0,
        "img1": img1,
        "gt": mid,
        "flow": torch.cat([f0, f1], 1),
        "reid": reid,
        "timestep": torch.tensor([0.3]),
    }


def warp_error(b: dict[str, torch.Tensor], flow: torch.Tensor) -> float:
    """Worst interior error of warping either frame onto the middle frame."""
    errs = [
        (backward_warp(b["img0"], flow[:, :2]) - b["gt"]).abs(),
        (backward_warp(b["img1"], flow[:, 2:]) - b["gt"]).abs(),
    ]
    return max(e[..., CROP:-CROP, CROP:-CROP].max().item() for e in errs)


TRANSFORMS = {
    "hflip": hflip,
    "vflip": vflip,
    "rot1": lambda b: rot90(b, 1),
    "rot2": lambda b: rot90(b, 2),
    "rot3": lambda b: rot90(b, 3),
    "swap": time_swap,
    "hflip_rot1_swap": lambda b: time_swap(rot90(hflip(b), 1)),
    "vflip_rot3": lambda b: rot90(vflip(b), 3),
}


def test_analytic_pair_is_consistent(batch: dict[str, torch.Tensor]) -> None:
    assert warp_error(batch, batch["flow"]) < 0.02
    assert warp_error(batch, torch.zeros_like(batch["flow"])) > 0.1


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transformed_flow_warps_transformed_frames(
    batch: dict[str, torch.Tensor], name: str
) -> None:
    out = TRANSFORMS[name](batch)
    assert warp_error(out, out["flow"]) < 0.02
    # The reference left the flow as it was: it no longer matches the frames.
    assert warp_error(out, batch["flow"]) > 0.1


def test_time_swap_exchanges_labels(batch: dict[str, torch.Tensor]) -> None:
    out = time_swap(batch)
    assert torch.equal(out["img0"], batch["img1"]) and torch.equal(out["img1"], batch["img0"])
    assert torch.equal(out["reid"][:, 0], batch["reid"][:, 1])
    assert torch.allclose(out["timestep"], torch.tensor([0.7]))
    assert torch.equal(out["gt"], batch["gt"])


def test_four_quarter_turns_are_identity(batch: dict[str, torch.Tensor]) -> None:
    out = batch
    for _ in range(4):
        out = rot90(out, 1)
    for key in ("img0", "img1", "gt", "flow"):
        assert torch.allclose(out[key], batch[key])


def repeat(batch: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v.repeat(n, *[1] * (v.ndim - 1)) for k, v in batch.items()}


def test_augment_batch_is_seeded_and_consistent(batch: dict[str, torch.Tensor]) -> None:
    big = repeat(batch, 8)
    a = augment_batch(big, torch.Generator().manual_seed(3))
    b = augment_batch(big, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in big)
    changed = [not torch.equal(a["img0"][i], big["img0"][i]) for i in range(8)]
    assert any(changed), "default augmentation left every sample unchanged"
    for i in range(8):
        sample = {k: v[i : i + 1] for k, v in a.items()}
        assert warp_error(sample, sample["flow"]) < 0.02


def test_augment_batch_disabled_is_identity(batch: dict[str, torch.Tensor]) -> None:
    off = MAFEAugmentParams(hflip=0, vflip=0, rot90=False, time_swap=0)
    out = augment_batch(repeat(batch, 3), torch.Generator().manual_seed(0), off)
    assert all(torch.equal(out[k], repeat(batch, 3)[k]) for k in batch)


def test_non_square_frames_keep_their_shape() -> None:
    b = {
        "img0": torch.rand(6, 1, 8, 12),
        "img1": torch.rand(6, 1, 8, 12),
        "gt": torch.rand(6, 1, 8, 12),
        "flow": torch.rand(6, 4, 8, 12),
        "reid": torch.rand(6, 2, 5),
    }
    out = augment_batch(b, torch.Generator().manual_seed(1))
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in b.items()}
    assert math.isclose(out["flow"].abs().sum().item(), b["flow"].abs().sum().item(), rel_tol=1e-5)
