"""Random spatial transforms of a frame pair and of its flow (ARFlow's ``RandomAffineFlow``).

Transforms are 3x3 matrices ``theta`` on coordinates normalized to [-1, 1] (pixel centres,
``align_corners=True``) that map a source frame onto its transformed view: the view at ``x'``
shows the frame at ``theta^-1 x'``. Frame 2's transform is a small relative one composed on
frame 1's, both optionally mirrored, as in ARFlow / UnSAMFlow ``sp_transforms.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from echomotion.flow.ops import pixel_grid
from echomotion.flow.params import SpatialTransformParams


@dataclass(frozen=True)
class PairTransform:
    """``theta1``, ``theta2``: (B, 3, 3) transforms of frame 1 and frame 2."""

    theta1: Tensor
    theta2: Tensor


def _uniform(n: int, low: float, high: float, like: Tensor, generator) -> Tensor:
    """``n`` draws (n,) uniform in [low, high] on the device and dtype of ``like``."""
    u = torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def _random_theta(n: int, ranges: tuple, like: Tensor, generator) -> Tensor:
    """(n, 3, 3) zoom-squeeze-rotate-translate matrices with ``ranges`` (trans, zoom, squeeze,
    rotate), each a (min, max) pair except trans (half-width of the translation)."""
    trans, (z0, z1), (s0, s1), (r0, r1) = ranges
    zoom, squeeze = _uniform(n, z0, z1, like, generator), _uniform(n, s0, s1, like, generator)
    tx, ty = (_uniform(n, -trans / 2, trans / 2, like, generator) for _ in range(2))
    phi = _uniform(n, r0, r1, like, generator)
    sx, sy, cos, sin = zoom * squeeze, zoom / squeeze, torch.cos(phi), torch.sin(phi)
    theta = torch.zeros(n, 3, 3, device=like.device, dtype=like.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * sx, sin * sy, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = -sin * sx, cos * sy, ty
    theta[:, 2, 2] = 1.0
    return theta


def _view_inside(theta: Tensor) -> Tensor:
    """(B,) whether every corner of the view maps inside the source frame."""
    corners = theta.new_tensor([[-1, -1, 1], [-1, 1, 1], [1, -1, 1], [1, 1, 1]]).T  # (3, 4)
    src = torch.linalg.inv(theta) @ corners  # (B, 3, 4)
    return (src[:, :2].abs() <= 1.0 + 1e-6).all(-1).all(-1)


def _sample_valid(base: Tensor, ranges: tuple, tries: int, generator) -> Tensor:
    """``random @ base`` redrawn where the view leaves the frame; ``base`` if never valid."""
    theta, invalid = base.clone(), torch.ones(len(base), dtype=torch.bool, device=base.device)
    for _ in range(tries):
        candidate = _random_theta(len(base), ranges, base, generator) @ base
        theta = torch.where(invalid[:, None, None], candidate, theta)
        invalid = ~_view_inside(theta)
        if not invalid.any():
            return theta
    return torch.where(invalid[:, None, None], base, theta)


def random_pair_transform(
    batch: int, params: SpatialTransformParams, like: Tensor, generator=None
) -> PairTransform:
    """Global transform of frame 1, a relative one on top for frame 2, a shared mirror."""
    p, eye = params, torch.eye(3, device=like.device, dtype=like.dtype).expand(batch, 3, 3)
    glob = (p.trans[0], p.zoom[:2], p.squeeze[:2], p.rotate[:2])
    rel = (p.trans[1], p.zoom[2:], p.squeeze[2:], p.rotate[2:])
    theta1 = _sample_valid(eye, glob, p.max_tries, generator)
    theta2 = _sample_valid(theta1, rel, p.max_tries, generator)
    if p.hflip:
        flip = torch.rand(batch, generator=generator, device=like.device, dtype=like.dtype)
        mirror = torch.diag_embed(eye.diagonal(dim1=1, dim2=2).clone())
        mirror[:, 0, 0] = torch.where(flip < 0.5, -1.0, 1.0)
        theta1, theta2 = mirror @ theta1, mirror @ theta2
    return PairTransform(theta1, theta2)


def _source_grid(theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Sampling grid (B, H, W, 2) of the view: normalized source position of each pixel."""
    inverse = torch.linalg.inv(theta)[:, :2]  # (B, 2, 3)
    return F.affine_grid(inverse, [len(theta), 1, *size], align_corners=True)


def transform_image(img: Tensor, theta: Tensor) -> Tensor:
    """The view (B, C, H, W) of ``img`` under ``theta`` (bilinear, border values outside)."""
    grid = _source_grid(theta, img.shape[-2:])
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _to_normalized(xy: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel coordinates (B, 2, H, W) -> normalized ones."""
    h, w = size
    scale = xy.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)]).view(1, 2, 1, 1)
    return xy * scale - 1.0


def _to_pixels(xy: Tensor, size: tuple[int, int]) -> Tensor:
    """Normalized coordinates (B, 2, H, W) -> pixel ones."""
    h, w = size
    scale = xy.new_tensor([(w - 1) / 2.0, (h - 1) / 2.0]).view(1, 2, 1, 1)
    return (xy + 1.0) * scale


def transform_flow(flow: Tensor, transform: PairTransform) -> Tensor:
    """Flow (B, 2, H, W) between the two views, from ``flow`` between the source frames.

    The view-1 pixel ``x'`` shows ``x = theta1^-1 x'``, which moves to ``x + flow(x)`` in
    frame 2, seen at ``theta2 (x + flow(x))`` in view 2; the new flow is that minus ``x'``.
    """
    size = flow.shape[-2:]
    source = _source_grid(transform.theta1, size).permute(0, 3, 1, 2)  # (B, 2, H, W), x
    flow_src = transform_image(flow, transform.theta1)  # flow(x) at each view-1 pixel
    target = _to_normalized(_to_pixels(source, size) + flow_src, size)
    homog = torch.cat([target, torch.ones_like(target[:, :1])], 1)  # (B, 3, H, W)
    moved = torch.einsum("bij,bjhw->bihw", transform.theta2, homog)[:, :2]
    return _to_pixels(moved, size) - pixel_grid(flow)


def view_inside(theta: Tensor, size: tuple[int, int]) -> Tensor:
    """Float mask (B, 1, H, W): 1 where the view pixel shows a point inside the frame."""
    source = _source_grid(theta, size)  # (B, H, W, 2)
    return (source.abs() <= 1.0 + 1e-6).all(-1).unsqueeze(1).to(theta.dtype)


def add_noise(imgs: tuple[Tensor, ...], std_max: float, generator=None) -> tuple[Tensor, ...]:
    """Gaussian noise with one std in [0, ``std_max``] for the batch, clamped to [0, 1]."""
    if std_max <= 0:
        return imgs
    like = imgs[0]
    std = float(_uniform(1, 0.0, std_max, like, generator))
    noisy = []
    for img in imgs:
        noise = torch.randn(img.shape, generator=generator, device=img.device, dtype=img.dtype)
        noisy.append((img + std * noise).clamp(0.0, 1.0))
    return tuple(noisy)


def transform_pair(
    img1: Tensor,
    img2: Tensor,
    flow: Tensor,
    mask: Tensor,
    params: SpatialTransformParams,
    generator=None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random views of (``img1``, ``img2``), the flow between them and its valid mask.

    ``flow`` (B, 2, H, W) is flow_12 of the source pair; ``mask`` (B, 1, H, W) its valid
    pixels, carried into view 1 (0 where the view leaves the frame).
    """
    t = random_pair_transform(len(img1), params, img1, generator)
    view1, view2 = transform_image(img1, t.theta1), transform_image(img2, t.theta2)
    new_flow = transform_flow(flow, t)
    new_mask = transform_image(mask, t.theta1) * view_inside(t.theta1, mask.shape[-2:])
    view1, view2 = add_noise((view1, view2), params.noise_std, generator)
    return view1, view2, new_flow, new_mask
