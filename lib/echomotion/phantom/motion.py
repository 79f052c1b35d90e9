"""Cardiac motion: phase over time, per-chamber scaling, the displacement fields and
the ground-truth optical flow that follows from them.

Each chamber scales about its anchor by ``long`` along and ``short`` across its axis,
linearly in the contraction s (0 = ED, 1 = ES). The forward map of the reference (ED)
configuration is X -> X + s V(X): inside chamber k, V is exactly that chamber's scaling
at ES; outside, a Shepard blend of the chambers' border displacements and a still
background (:func:`forward_field`). Contracting chambers pull away from the tissue
around them, so the forward map stretches walls (they thicken in systole) and does
not fold. Frame t is rendered through the backward map ``G_t(x) = x + u_t(x)``, the
inverse of the forward map (Newton), exact inside every chamber: pixel x of frame t
shows the tissue that sits at G_t(x) at ED.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import map_coordinates

from echomotion.phantom.anatomy import LABELS, REFERENCE_SIZE, Anatomy, Chamber
from echomotion.phantom.identity import VideoIdentity

FALLOFF = 20.0  # pixels at 112 x 112: how far motion reaches beyond the chamber borders


def cardiac_phase(cycle: np.ndarray, systole: float) -> np.ndarray:
    """Contraction s in [0, 1] (0 = ED, 1 = ES) at cycle position ``cycle`` (cycles).

    Half-cosine up over the systolic fraction, half-cosine down over diastole: smooth,
    with zero speed at ED and ES.
    """
    c = np.mod(cycle, 1.0)
    rise = 0.5 * (1.0 - np.cos(np.pi * c / systole))
    fall = 0.5 * (1.0 + np.cos(np.pi * (c - systole) / (1.0 - systole)))
    return np.where(c < systole, rise, fall)


def end_scales(anatomy: Anatomy, ident: VideoIdentity) -> dict[str, tuple[float, float]]:
    """(long, short) scale of each chamber at ES (1, 1 at ED).

    The atria lengthen by exactly the descent of their ventricle's base, so the valve
    plane between them keeps its thickness.
    """
    lv, rv = anatomy.chamber("LV"), anatomy.chamber("RV")
    la, ra = anatomy.chamber("LA"), anatomy.chamber("RA")
    la_long = 1.0 + (1.0 - ident.lv_long_es) * (lv.start + lv.length) / la.length
    ra_long = 1.0 + (1.0 - ident.rv_long_es) * (rv.start + rv.length) / ra.length
    return {
        "LV": (ident.lv_long_es, ident.lv_short_es),
        "RV": (ident.rv_long_es, ident.rv_short_es),
        "LA": (la_long, ident.atrium_widen_es),
        "RA": (ra_long, ident.atrium_widen_es),
    }


def chamber_scales(es: tuple[float, float], s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(long, short) scales at contraction ``s``: linear from 1 (ED) to ``es`` (ES)."""
    s = np.asarray(s, dtype=np.float32)
    return 1.0 + (es[0] - 1.0) * s, 1.0 + (es[1] - 1.0) * s


def _local_to_world(c: Chamber, along, across) -> np.ndarray:
    """Vector with components along / across the chamber axis -> (2, ...) (dx, dy)."""
    return np.stack(
        [along * c.axis[0] + across * c.normal[0], along * c.axis[1] + across * c.normal[1]]
    )


def forward_field(anatomy: Anatomy, ends: dict[str, tuple[float, float]], size: int) -> np.ndarray:
    """V (2, H, W) float32: displacement of each reference (ED) point at ES, pixels.

    Inside chamber k it is the exact scaling about the anchor; outside, a Shepard
    (inverse distance, power 1) blend of every chamber's border displacement and of a
    still background that takes over ``FALLOFF`` beyond the nearest chamber. Contracting
    ventricles pull their borders away from the tissue around them, so this forward map
    stretches (thickens) walls rather than folding them.
    """
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    falloff = FALLOFF * size / REFERENCE_SIZE
    num, den, d_min = 0.0, 0.0, np.full((size, size), np.inf, dtype=np.float32)
    exact = np.zeros((2, size, size), dtype=np.float32)
    for c in anatomy.chambers:
        long, short = ends[c.name]
        p, q = c.local(xx, yy)
        dist, pp, qq = c.distance_and_projection(p, q)
        v = _local_to_world(c, (long - 1.0) * pp, (short - 1.0) * qq)
        w = 1.0 / np.maximum(dist, 1e-6)
        num, den, d_min = num + w * v, den + w, np.minimum(d_min, dist)
        exact = np.where(dist <= 0, v, exact)
    gap = falloff - d_min
    w_bg = (d_min / falloff) ** 2 / np.maximum(gap, 1e-6)  # ~0 near walls
    blend = np.where(gap > 0, num / (den + w_bg), 0.0)
    return np.where(d_min <= 0, exact, blend).astype(np.float32)


class Inverse:
    """Solves y + s V(y) = x for y by Newton's method (bilinear samples of V and of its
    gradient), starting from ``levels`` precomputed contraction levels."""

    def __init__(self, field: np.ndarray, levels: int = 9, iterations: int = 12) -> None:
        _, h, w = field.shape
        self.grid = np.stack(np.meshgrid(np.arange(w), np.arange(h))).astype(np.float32)
        grads = [g for c in field for g in np.gradient(c, axis=(1, 0))]  # dVx/dx, dVx/dy, ...
        self.tex_a = np.dstack([field[0], field[1], grads[0], grads[1]])
        self.tex_b = np.dstack([grads[2], grads[3]])
        self.levels = np.linspace(0.0, 1.0, levels, dtype=np.float32)
        self.level_u = self.newton(
            self.levels, -self.levels[:, None, None, None] * field, iterations
        )

    def _sample(self, tex: np.ndarray, y: np.ndarray) -> np.ndarray:
        """tex (H, W, C) at positions y (T, 2, H, W) -> (T, H, W, C)."""
        out = [cv2.remap(tex, *f, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for f in y]
        return np.stack(out).reshape(*y[:, 0].shape, tex.shape[-1])

    def newton(self, s: np.ndarray, u: np.ndarray, iterations: int) -> np.ndarray:
        """Refine displacements u (T, 2, H, W) so that x + u solves y + s_t V(y) = x."""
        s = np.asarray(s, dtype=np.float32)[:, None, None]  # (T, 1, 1)
        y = self.grid + u
        for _ in range(iterations):
            va, vb = self._sample(self.tex_a, y), self._sample(self.tex_b, y)
            fx = y[:, 0] + s * va[..., 0] - self.grid[0]
            fy = y[:, 1] + s * va[..., 1] - self.grid[1]
            jxx, jxy = 1.0 + s * va[..., 2], s * va[..., 3]
            jyx, jyy = s * vb[..., 0], 1.0 + s * vb[..., 1]
            det = np.maximum(jxx * jyy - jxy * jyx, 0.05)
            step = np.stack([(jyy * fx - jxy * fy) / det, (jxx * fy - jyx * fx) / det], axis=1)
            y = y - np.clip(step, -2.0, 2.0)
        return y - self.grid

    def __call__(self, s: np.ndarray, iterations: int = 2) -> np.ndarray:
        """u (T, 2, H, W) at contractions s (T,): level interpolation, then Newton."""
        pos = np.clip(np.asarray(s) * (len(self.levels) - 1), 0, len(self.levels) - 1 - 1e-6)
        lo = np.floor(pos).astype(int)
        frac = (pos - lo).astype(np.float32)[:, None, None, None]
        start = (1.0 - frac) * self.level_u[lo] + frac * self.level_u[lo + 1]
        return self.newton(s, start, iterations)


def deform(
    anatomy: Anatomy,
    inverse: Inverse,
    s: np.ndarray,
    scales: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Backward displacement u_t (T, 2, H, W) float32 (pixels, channel 0 dx, 1 dy) and
    blood-pool labels (T, H, W) uint8 (chamber label, else tissue) at contraction ``s``
    (T,), for the inverse of the forward field and the matching per-chamber
    ``scales[name] = (long, short)``, each (T,).

    Outside the chambers u inverts x -> x + s V(x) numerically; inside chamber k it is
    the exact inverse scaling, so each blood pool is exactly its scaled shape.
    """
    size = inverse.grid.shape[-1]
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    u = inverse(s)
    labels = np.full(u[:, 0].shape, LABELS["tissue"], dtype=np.uint8)
    for c in anatomy.chambers:
        long, short = (v[:, None, None] for v in scales[c.name])  # (T, 1, 1)
        p, q = c.local(xx, yy)
        inside = c.contains(p, q, long, short)  # (T, H, W)
        exact = _local_to_world(c, (1.0 / long - 1.0) * p, (1.0 / short - 1.0) * q)
        u = np.where(inside[:, None], exact.transpose(1, 0, 2, 3), u)
        labels[inside] = c.label
    return np.ascontiguousarray(u, dtype=np.float32), labels


def _sample(fields: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of fields (C, H, W) at positions y (2, H, W) = (x, y)."""
    coords = np.stack([y[1], y[0]])  # map_coordinates wants (row, col)
    return np.stack([map_coordinates(f, coords, order=1, mode="nearest") for f in fields])


def flow_between(disp_a: np.ndarray, disp_b: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Ground-truth flow from frame a to frame b, (2, H, W) float32, pixels.

    For each pixel x of frame a, solves G_b(y) = G_a(x) for y by Newton's method
    (bilinear samples of u_b and its gradient) and returns y - x, so that
    warp(I_b, flow) ~= I_a, i.e. I_a(x) ~= I_b(x + flow(x)).
    """
    disp_a = np.asarray(disp_a, dtype=np.float64)
    disp_b = np.asarray(disp_b, dtype=np.float64)
    if disp_a.shape != disp_b.shape or disp_a.shape[0] != 2:
        raise ValueError(
            f"displacements must both be (2, H, W), got {disp_a.shape}, {disp_b.shape}"
        )
    h, w = disp_a.shape[1:]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h))).astype(np.float64)  # (2, H, W)
    target = grid + disp_a
    grads = np.concatenate([np.stack(np.gradient(c, axis=(1, 0))) for c in disp_b])  # (4,H,W)
    fields = np.concatenate([disp_b, grads])  # ux, uy, dux/dx, dux/dy, duy/dx, duy/dy
    y = target - disp_b
    for _ in range(iterations):
        ux, uy, jxx, jxy, jyx, jyy = _sample(fields, y)
        fx, fy = y[0] + ux - target[0], y[1] + uy - target[1]
        jxx, jyy = jxx + 1.0, jyy + 1.0
        det = jxx * jyy - jxy * jyx
        ok = np.abs(det) > 0.05
        safe = np.where(ok, det, 1.0)
        step_x = np.where(ok, (jyy * fx - jxy * fy) / safe, fx)
        step_y = np.where(ok, (jxx * fy - jyx * fx) / safe, fy)
        y = y - np.clip(np.stack([step_x, step_y]), -4.0, 4.0)
        if max(np.abs(fx).max(), np.abs(fy).max()) < 1e-4:
            break
    return (y - grid).astype(np.float32)
