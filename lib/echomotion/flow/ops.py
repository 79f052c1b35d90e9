"""Tensor operations shared by the flow network and its losses.

Flow convention (project-wide): ``flow_ab`` is float (B, 2, H, W) in pixels, channel 0 = dx
(column), channel 1 = dy (row), and ``I_a(x) ~= I_b(x + flow_ab(x))``; so
``backward_warp(img_b, flow_ab)`` reconstructs ``img_a``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pixel_grid(flow: Tensor) -> Tensor:
    """Pixel coordinates (1, 2, H, W) (x then y) on the device and dtype of ``flow``."""
    h, w = flow.shape[-2:]
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None]  # (1, 2, H, W)


def backward_warp(img: Tensor, flow: Tensor, padding_mode: str = "border") -> Tensor:
    """Sample ``img`` (B, C, H, W) bilinearly at ``x + flow(x)``: ``warp(img_b, flow_ab) ~ img_a``.

    Samples beyond the border take the border value (``padding_mode`` of ``grid_sample``).
    """
    if img.shape[0] != flow.shape[0] or img.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"img {tuple(img.shape)} and flow {tuple(flow.shape)} do not match")
    h, w = img.shape[-2:]
    pos = pixel_grid(flow) + flow  # (B, 2, H, W)
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    gx = 2.0 * pos[:, 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * pos[:, 1] / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)  # (B, H, W, 2)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def inside_frame(flow: Tensor) -> Tensor:
    """Float mask (B, 1, H, W): 1 where ``x + flow(x)`` lands inside the frame."""
    h, w = flow.shape[-2:]
    pos = pixel_grid(flow) + flow  # (B, 2, H, W)
    inside = (pos[:, 0] >= 0) & (pos[:, 0] <= w - 1) & (pos[:, 1] >= 0) & (pos[:, 1] <= h - 1)
    return inside.unsqueeze(1).to(flow.dtype)


def local_correlation(
    f1: Tensor, f2: Tensor, max_displacement: int, cosine: bool = False
) -> Tensor:
    """Cost volume (B, (2d+1)^2, H, W) of ``f1(x) . f2(x + delta)`` for |delta| <= d (row-major).

    Channel-mean of the products, or with ``cosine`` the cosine similarity (features
    L2-normalized over channels), whose scale does not depend on the feature magnitudes. A
    pure-torch loop over displacements: one (B, C, H, W) product at a time, no extension.
    """
    d = max_displacement
    h, w = f1.shape[-2:]
    if cosine:
        f1, f2 = F.normalize(f1, dim=1), F.normalize(f2, dim=1)
    reduce = torch.sum if cosine else torch.mean
    f2p = F.pad(f2, (d, d, d, d))  # zeros outside: no match beyond the border
    costs = [
        reduce(f1 * f2p[:, :, dy : dy + h, dx : dx + w], dim=1)
        for dy in range(2 * d + 1)
        for dx in range(2 * d + 1)
    ]
    return torch.stack(costs, dim=1)  # (B, (2d+1)^2, H, W)


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a flow field bilinearly to ``size`` (H, W), scaling its vectors to the new pixels."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    scale = torch.tensor([size[1] / w, size[0] / h], device=flow.device, dtype=flow.dtype)
    return out * scale.view(1, 2, 1, 1)


def resize_image(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-average ``img`` (B, C, H, W) down to ``size``; identity when sizes match."""
    if img.shape[-2:] == tuple(size):
        return img
    return F.interpolate(img, size=size, mode="area")


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad (B, C, H, W) on the bottom and right so H and W divide ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
