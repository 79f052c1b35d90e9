"""Inter-frame attention in (shifted) windows: one attention map, two features.

For the tokens of one frame as queries and the tokens of the other frame (same window) as
keys and values, a single softmax map ``A`` gives

- the appearance feature ``A @ V`` (the other frame's content, gathered where it matches), and
- the motion feature ``P(A @ E(c_k) - E(c_q))``: the attention-weighted coordinate embedding of
  the keys minus the query's own coordinate embedding. ``E`` is linear, so its bias cancels
  (the rows of ``A`` sum to one) and the motion feature is a learned linear map of the
  expected displacement ``sum_k A_qk c_k - c_q`` from the query to where it is in the other
  frame.

Frames travel stacked along the batch axis: rows ``[:B]`` are frame 0, rows ``[B:]`` frame 1,
so frame 0 attends to frame 1 and frame 1 to frame 0 in one call (as in EMA-VFI, Zhang et al.
2023). Coordinates are normalised to [-1, 1] over the feature grid (pixel centres).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def coordinate_grid(h: int, w: int, rows: int, cols: int, device: torch.device) -> Tensor:
    """Normalised (x, y) pixel-centre coordinates (rows, cols, 2) of a grid of real size h x w.

    ``rows >= h`` and ``cols >= w`` extend the grid over window padding (coordinates > 1).
    """
    ys = (2 * torch.arange(rows, device=device, dtype=torch.float32) + 1) / h - 1
    xs = (2 * torch.arange(cols, device=device, dtype=torch.float32) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)  # (rows, cols, 2)


def window_partition(x: Tensor, window: int) -> Tensor:
    """(N, H, W, C) with H, W multiples of ``window`` -> (N * nW, window * window, C)."""
    return rearrange(x, "n (hw p) (ww q) c -> (n hw ww) (p q) c", p=window, q=window)


def window_reverse(x: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (N * nW, window * window, C) -> (N, h, w, C)."""
    return rearrange(
        x, "(n hw ww) (p q) c -> n (hw p) (ww q) c", hw=h // window, ww=w // window, p=window
    )


def padded_size(n: int, window: int) -> int:
    """Smallest multiple of ``window`` that is >= ``n``."""
    return math.ceil(n / window) * window


def window_attention_mask(
    h: int, w: int, window: int, shift: int, device: torch.device
) -> Tensor | None:
    """Boolean mask (nW, L, L), True where a query may attend to a key, for windows over an
    h x w grid padded to window multiples.

    A query may not attend to a key that (a) is window padding while the query is not (or the
    reverse), or (b) was brought into its window by the cyclic shift from the opposite border
    (the two positions lie a window or more apart in the unshifted grid). The query's own
    position is always allowed, so no row is fully masked. None when everything is allowed.
    """
    hp, wp = padded_size(h, window), padded_size(w, window)
    rows, cols = torch.meshgrid(
        torch.arange(hp, device=device), torch.arange(wp, device=device), indexing="ij"
    )
    pad = (rows >= h) | (cols >= w)
    grid = torch.stack([rows, cols, pad.long()], dim=-1)  # (hp, wp, 3)
    if shift:
        grid = torch.roll(grid, shifts=(-shift, -shift), dims=(0, 1))
    win = window_partition(grid[None], window)  # (nW, L, 3)
    diff = (win[:, :, None, :] - win[:, None, :, :]).abs()  # (nW, L, L, 3)
    forbidden = (diff[..., 0] >= window) | (diff[..., 1] >= window) | (diff[..., 2] > 0)
    if not forbidden.any():
        return None
    return ~forbidden


class InterFrameAttention(nn.Module):
    """Cross-frame attention whose single map yields appearance and motion features."""

    def __init__(self, dim: int, motion_dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads or motion_dim % num_heads:
            raise ValueError(
                f"dim ({dim}) and motion_dim ({motion_dim}) must be multiples of "
                f"num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.cor_embed = nn.Linear(2, motion_dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.motion_proj = nn.Linear(motion_dim, motion_dim)

    def forward(
        self, x: Tensor, other: Tensor, cor: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Queries ``x`` (N, L, C) attend to ``other`` (N, L, C) of the other frame.

        ``cor`` (nW, L, 2) holds the window coordinates (N is a multiple of nW, windows
        batch-major); ``mask`` (nW, L, L) is boolean (True: may attend) or None. Returns
        appearance (N, L, C) and motion (N, L, motion_dim).
        """
        n, _, dim = x.shape
        n_win = cor.shape[0]
        heads = self.num_heads
        q = rearrange(self.q(x), "n l (h d) -> n h l d", h=heads)
        k, v = rearrange(self.kv(other), "n l (two h d) -> two n h l d", two=2, h=heads)
        cor_emb = self.cor_embed(cor).repeat(n // n_win, 1, 1)  # (N, L, motion_dim)
        cor_heads = rearrange(cor_emb, "n l (h d) -> n h l d", h=heads)
        # One attention map for values and key coordinates: attend over their concatenation.
        values = torch.cat([v, cor_heads], dim=-1)  # (N, heads, L, dv + dm)
        attn_mask = None if mask is None else mask.repeat(n // n_win, 1, 1)[:, None]
        out = F.scaled_dot_product_attention(q, k, values, attn_mask=attn_mask)
        appearance = rearrange(out[..., : dim // heads], "n h l d -> n l (h d)")
        expected_cor = rearrange(out[..., dim // heads :], "n h l d -> n l (h d)")
        motion = self.motion_proj(expected_cor - cor_emb)
        return self.proj(appearance), motion


class DWConvMlp(nn.Module):
    """Token MLP with a depthwise 3x3 convolution between the two linear layers."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        h = self.fc1(x).permute(0, 3, 1, 2)  # (N, hidden, H, W)
        h = self.dwconv(h).permute(0, 2, 3, 1)  # (N, H, W, hidden)
        return self.fc2(self.act(h))


class MotionFormerBlock(nn.Module):
    """Pre-norm transformer block: windowed inter-frame attention, then a depthwise-conv MLP."""

    def __init__(
        self,
        dim: int,
        motion_dim: int,
        num_heads: int,
        window_size: int,
        shift: bool,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = InterFrameAttention(dim, motion_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = DWConvMlp(dim, int(dim * mlp_ratio))

    def shift_size(self, h: int, w: int) -> int:
        """Cyclic shift of this block; none when one window already covers the grid."""
        if not self.shift or max(h, w) <= self.window_size:
            return 0
        return self.window_size // 2

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (2B, H, W, C), frame 0 then frame 1 -> (x (2B, H, W, C), motion (2B, H, W, Cm))."""
        # 1. pad to window multiples and shift
        h, w = x.shape[1:3]
        ws, shift = self.window_size, self.shift_size(h, w)
        hp, wp = padded_size(h, ws), padded_size(w, ws)
        xp = F.pad(self.norm1(x), (0, 0, 0, wp - w, 0, hp - h))  # (2B, hp, wp, C)
        cor = coordinate_grid(h, w, hp, wp, x.device).to(x.dtype)  # (hp, wp, 2)
        if shift:
            xp = torch.roll(xp, shifts=(-shift, -shift), dims=(1, 2))
            cor = torch.roll(cor, shifts=(-shift, -shift), dims=(0, 1))
        # 2. each frame's windows attend to the other frame's windows at the same place
        win = window_partition(xp, ws)  # (2B * nW, L, C)
        other = torch.cat(win.chunk(2)[::-1])  # frame 1 windows first, then frame 0
        mask = window_attention_mask(h, w, ws, shift, x.device)
        appearance, motion = self.attn(win, other, window_partition(cor[None], ws), mask)
        # 3. undo windows, shift and padding
        both = window_reverse(torch.cat([appearance, motion], dim=-1), ws, hp, wp)
        if shift:
            both = torch.roll(both, shifts=(shift, shift), dims=(1, 2))
        appearance, motion = both[:, :h, :w].split([x.shape[-1], motion.shape[-1]], dim=-1)
        # 4. residual attention and MLP
        x = x + appearance
        return x + self.mlp(self.norm2(x)), motion
