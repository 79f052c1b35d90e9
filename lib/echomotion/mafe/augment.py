"""EMA-VFI's augmentations, applied to the frames AND consistently to the pseudo labels.

A spatial transform that builds the new image ``J(y) = I(A(y))`` from the old (``A`` maps new
pixel coordinates to old ones, with linear part ``L``) maps a backward flow ``f`` to
``f'(y) = L^-1 f(A(y))``: resample the field like an image, then transform each vector.

- horizontal flip: ``L = diag(-1, 1)``, negate dx;
- vertical flip: ``L = diag(1, -1)``, negate dy;
- ``torch.rot90(k=1, dims=(-2, -1))``: ``A(x, y) = (W - 1 - y, x)``, so per quarter turn
  ``(dx, dy) -> (dy, -dx)``;
- temporal swap: img0 <-> img1, the mid->0 and mid->1 halves of the flow swap, the two ReID
  embeddings swap, and the timestep ``t`` becomes ``1 - t``.

(The EMA-VFI reference flipped and rotated the images only; its flows, had it had any, would
no longer have warped the transformed frames.) The ReID embeddings are kept under the spatial
transforms: they label the video's identity, which a flip or rotation does not change.
"""

from __future__ import annotations

import torch
from torch import Tensor

from echomotion.mafe.params import MAFEAugmentParams

IMAGE_KEYS = ("img0", "img1", "gt")


def _spatial(batch: dict, image_op, vector_op) -> dict:
    """Apply ``image_op`` to the frames and flow field, then ``vector_op`` to flow vectors."""
    out = dict(batch)
    for key in IMAGE_KEYS:
        if key in batch:
            out[key] = image_op(batch[key])
    if "flow" in batch:
        out["flow"] = vector_op(image_op(batch["flow"]))
    return out


def _signed(flow: Tensor, sx: float, sy: float) -> Tensor:
    """Multiply the dx channels (0, 2, ...) by sx and the dy channels by sy: (B, 2k, H, W)."""
    sign = flow.new_tensor([sx, sy]).repeat(flow.shape[1] // 2)
    return flow * sign.view(1, -1, 1, 1)


def hflip(batch: dict) -> dict:
    """Mirror left-right: frames and flow field flipped, dx negated."""
    return _spatial(batch, lambda x: x.flip(-1), lambda f: _signed(f, -1.0, 1.0))


def vflip(batch: dict) -> dict:
    """Mirror top-bottom: frames and flow field flipped, dy negated."""
    return _spatial(batch, lambda x: x.flip(-2), lambda f: _signed(f, 1.0, -1.0))


def _quarter_turn_vectors(flow: Tensor) -> Tensor:
    """(dx, dy) -> (dy, -dx) for every vector of a (B, 2k, H, W) field."""
    pairs = flow.unflatten(1, (-1, 2))  # (B, k, 2, H, W)
    return torch.stack([pairs[:, :, 1], -pairs[:, :, 0]], dim=2).flatten(1, 2)


def rot90(batch: dict, k: int) -> dict:
    """Rotate by ``k`` quarter turns as ``torch.rot90(x, k, dims=(-2, -1))``, flows included."""
    k %= 4

    def vectors(flow: Tensor) -> Tensor:
        for _ in range(k):
            flow = _quarter_turn_vectors(flow)
        return flow

    return _spatial(batch, lambda x: torch.rot90(x, k, dims=(-2, -1)), vectors)


def time_swap(batch: dict) -> dict:
    """Exchange the two input frames, the flow halves, the ReID rows; t becomes 1 - t."""
    out = dict(batch)
    out["img0"], out["img1"] = batch["img1"], batch["img0"]
    if "flow" in batch:
        out["flow"] = torch.cat([batch["flow"][:, 2:], batch["flow"][:, :2]], dim=1)
    if "reid" in batch:
        out["reid"] = batch["reid"].flip(1)
    if "timestep" in batch:
        out["timestep"] = 1 - batch["timestep"]
    return out


def _sample(batch: dict, i: int) -> dict:
    """Sample ``i`` of the batch, keeping its batch axis (non-tensors pass through)."""
    return {k: v[i : i + 1] if isinstance(v, Tensor) else v for k, v in batch.items()}


def augment_batch(
    batch: dict, generator: torch.Generator, params: MAFEAugmentParams | None = None
) -> dict:
    """Randomly flip, rotate and time-swap each sample of a MAFE batch, labels included.

    Every tensor of ``batch`` must have the batch as its first axis. Odd quarter turns are
    drawn only for square frames, so the samples still stack.
    """
    params = params or MAFEAugmentParams()
    b, _, h, w = batch["img0"].shape
    draws = torch.rand(b, 3, generator=generator)  # (B, [hflip, vflip, swap])
    turns = torch.randint(0, 4 if h == w else 2, (b,), generator=generator)
    turns = turns * (1 if h == w else 2) * int(params.rot90)
    samples = []
    for i in range(b):
        s = _sample(batch, i)
        if draws[i, 0] < params.hflip:
            s = hflip(s)
        if draws[i, 1] < params.vflip:
            s = vflip(s)
        s = rot90(s, int(turns[i]))
        if draws[i, 2] < params.time_swap:
            s = time_swap(s)
        samples.append(s)
    return {
        k: torch.cat([s[k] for s in samples]) if isinstance(v, Tensor) else v
        for k, v in batch.items()
    }
