"""Apical four-chamber anatomy in the reference (end-diastolic) configuration.

Every chamber is a "bullet": an ellipse with semi-axes ``a`` (along its axis) and ``b``,
from its tip, cut flat at ``a * (1 + kappa)`` from the tip (``kappa = 1`` keeps the whole
ellipse). Ventricles point their axis from the apex down to the valve and are anchored
at the LV apex level; atria point theirs up to the valve and are anchored at their far
end; a chamber scaled about its anchor keeps that point still.

Label values (``labels`` in truth.zarr): 0 outside the sector, 1 tissue, 2 LV blood,
3 RV blood, 4 LA blood, 5 RA blood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from echomotion.phantom.identity import VideoIdentity

LABELS = {"outside": 0, "tissue": 1, "LV": 2, "RV": 3, "LA": 4, "RA": 5}
REFERENCE_SIZE = 112  # identity lengths are pixels of a frame this size
SECTOR_APEX = (55.5, -2.0)  # canonical (x, y) of the fan's apex; the heart turns about it
LV_APEX = (57.5, 13.0)
TRICUSPID_OFFSET = 2.0  # tricuspid annulus this much nearer the apex than the mitral one


@dataclass(frozen=True)
class Chamber:
    """One blood pool; ``wall`` is the thickness of its bright wall (pixels).

    Its tip lies ``start`` along the axis from the ``anchor``, the point it scales about:
    the RV is anchored level with the LV apex, so both ventricles shorten towards the
    same apex and the septum between them does not shear.
    """

    name: str
    label: int
    anchor: tuple[float, float]  # (x, y) pixels
    axis: tuple[float, float]  # unit vector from the anchor along the long axis
    a: float
    b: float
    kappa: float
    wall: float
    start: float = 0.0

    @property
    def normal(self) -> tuple[float, float]:
        """Unit vector across the long axis (the axis turned by -90 degrees)."""
        return (self.axis[1], -self.axis[0])

    @property
    def length(self) -> float:
        """Tip to base along the axis."""
        return self.a * (1.0 + self.kappa)

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p, q): position along and across the long axis, from the anchor."""
        dx, dy = x - self.anchor[0], y - self.anchor[1]
        return dx * self.axis[0] + dy * self.axis[1], dx * self.normal[0] + dy * self.normal[1]

    def half_width(self, p: np.ndarray, long: float = 1.0, short: float = 1.0) -> np.ndarray:
        """Half width of the chamber at axial position ``p`` once scaled by (long, short)."""
        a = self.a * long
        pc = p - (self.start * long + a)
        return self.b * short * np.sqrt(np.clip(1.0 - (pc / a) ** 2, 0.0, None))

    def distance_and_projection(self, p, q, long=1.0, short=1.0):
        """For the chamber scaled by (long, short): approximate signed distance (pixels,
        < 0 inside) and a point (p, q) of its closed region near the given one: itself
        when inside; else stepped back along the ellipse normal by the distance, clamped
        to the base plane and pulled radially onto the ellipse.
        """
        a, b = self.a * long, self.b * short
        centre, base = (self.start + self.a) * long, (self.start + self.length) * long
        pc = p - centre
        gp, gq = pc / (a * a), q / (b * b)  # normal direction of the ellipse
        k0 = np.hypot(pc / a, q / b)
        k1 = np.maximum(np.hypot(gp, gq), 1e-9)
        to_ellipse = k0 * (k0 - 1.0) / k1
        dist = np.maximum(to_ellipse, p - base)
        step = np.maximum(to_ellipse, 0.0) / k1  # back along the normal to the ellipse
        pc, q = np.minimum(pc - step * gp, base - centre), q - step * gq
        k = np.maximum(np.hypot(pc / a, q / b), 1.0)
        return dist, centre + pc / k, q / k

    def contains(self, p, q, long=1.0, short=1.0) -> np.ndarray:
        """Whether (p, q) lies in the chamber scaled by (long, short) (border included)."""
        a, b = self.a * long, self.b * short
        pc = p - (self.start + self.a) * long
        inside = (pc / a) ** 2 + (q / b) ** 2 <= 1.0
        return inside & (p <= (self.start + self.length) * long)

    def signed_distance(self, p, q, long=1.0, short=1.0) -> np.ndarray:
        """Approximate signed distance (pixels, < 0 inside) to the scaled chamber."""
        a, b = self.a * long, self.b * short
        pc = p - (self.start + self.a) * long
        k0 = np.hypot(pc / a, q / b)
        k1 = np.maximum(np.hypot(pc / (a * a), q / (b * b)), 1e-9)
        return np.maximum(k0 * (k0 - 1.0) / k1, p - (self.start + self.length) * long)


@dataclass(frozen=True)
class Anatomy:
    """The four chambers of one video (reference configuration) and their reflectivities."""

    chambers: tuple[Chamber, ...]
    myocardium: float
    tissue: float
    blood: float

    def chamber(self, name: str) -> Chamber:
        return next(c for c in self.chambers if c.name == name)

    def reference_maps(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (uint8) and reflectivity (float32) at reference positions (x, y)."""
        dist = np.stack([c.signed_distance(*c.local(x, y)) for c in self.chambers])
        nearest = np.argmin(dist, axis=0)
        d_min = np.take_along_axis(dist, nearest[None], axis=0)[0]
        walls = np.array([c.wall for c in self.chambers])[nearest]
        pool = np.array([c.label for c in self.chambers], dtype=np.uint8)[nearest]
        labels = np.where(d_min <= 0.0, pool, np.uint8(LABELS["tissue"]))
        peri = min(1.0, 1.2 * self.myocardium)
        profile = (
            [-0.15, 0.15, 0.85, 1.15, 1.35, 1.65, 1.9],
            [self.blood, self.myocardium, self.myocardium, self.tissue, peri, peri, self.tissue],
        )
        refl = np.interp(d_min / walls, *profile).astype(np.float32)
        return labels.astype(np.uint8), refl


def _place(point, ident: VideoIdentity, scale: float) -> tuple[float, float]:
    """Canonical 112-frame point -> image pixels: turn and zoom about the sector apex,
    shift, and rescale to the frame size."""
    ang = math.radians(ident.rotation_deg)
    dx, dy = point[0] - SECTOR_APEX[0], point[1] - SECTOR_APEX[1]
    x = SECTOR_APEX[0] + ident.zoom * (math.cos(ang) * dx - math.sin(ang) * dy) + ident.offset_x
    y = SECTOR_APEX[1] + ident.zoom * (math.sin(ang) * dx + math.cos(ang) * dy) + ident.offset_y
    return ((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5)


def _rv_offset(lv: Chamber, rv: Chamber, septum: float) -> float:
    """Distance between the (parallel) LV and RV axes leaving at least ``septum`` between
    them; both chambers measured from the same apex level."""
    u = np.linspace(0.0, lv.length, 256)
    return float(np.max(lv.half_width(u) + rv.half_width(u)) + septum)


def _canonical_chambers(ident: VideoIdentity) -> list[Chamber]:
    """The four chambers on the canonical 112 x 112 frame (before turn, zoom, shift)."""
    tilt = math.radians(ident.lv_tilt_deg)
    d = (math.sin(tilt), math.cos(tilt))
    n = (d[1], -d[0])

    def beside(along: float, across: float) -> tuple[float, float]:
        return (
            LV_APEX[0] + along * d[0] + across * n[0],
            LV_APEX[1] + along * d[1] + across * n[1],
        )

    kap = ident.lv_truncation
    lv_a = ident.lv_length / (1 + kap)
    lv = Chamber("LV", 2, LV_APEX, d, lv_a, ident.lv_half_width, kap, ident.wall)
    shift = ident.rv_apex_fraction * lv.length
    rv_a = (lv.length - shift - TRICUSPID_OFFSET) / (1 + ident.rv_truncation)
    rv_b, rv_kap = ident.rv_width_ratio * lv.b, ident.rv_truncation
    rv = Chamber("RV", 3, LV_APEX, d, rv_a, rv_b, rv_kap, 0.6 * ident.wall, start=shift)
    sep = _rv_offset(lv, rv, ident.septum)
    rv = replace(rv, anchor=beside(0.0, -sep))
    la_b = ident.la_half_width
    ra_b = ident.ra_width_ratio * la_b
    la_shift = max(0.0, la_b + ra_b + ident.septum - sep)  # LA moves laterally if needed
    atria = []
    for name, label, base, half_len, half_w, across in (
        ("LA", 4, lv.length, ident.la_half_length, la_b, la_shift),
        ("RA", 5, shift + rv.length, ident.ra_half_length, ra_b, -sep),
    ):
        anchor = beside(base + ident.valve_gap + 2 * half_len, across)
        up = (-d[0], -d[1])
        atria.append(Chamber(name, label, anchor, up, half_len, half_w, 1.0, 0.5 * ident.wall))
    return [lv, rv, *atria]


def build_anatomy(ident: VideoIdentity, size: int) -> Anatomy:
    """The video's chambers on a ``size`` x ``size`` frame (reference configuration)."""
    scale = size / REFERENCE_SIZE
    ang = math.radians(ident.rotation_deg)
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    chambers = []
    for c in _canonical_chambers(ident):
        axis = tuple(float(v) for v in rot @ np.asarray(c.axis))
        k = ident.zoom * scale
        chambers.append(
            replace(
                c,
                anchor=_place(c.anchor, ident, scale),
                axis=axis,
                a=c.a * k,
                b=c.b * k,
                wall=c.wall * scale,
                start=c.start * k,
            )
        )
    return Anatomy(tuple(chambers), ident.myocardium, ident.tissue, ident.blood)
