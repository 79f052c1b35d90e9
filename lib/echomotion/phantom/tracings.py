"""LV tracings as in EchoNet-Dynamic's VolumeTracings.csv, and volumes from them.

A traced frame is a (1 + N, 4) array of (X1, Y1, X2, Y2) rows: row 0 is the long axis
from the apex to the mid-point of the mitral annulus, rows 1..N are chords across it,
perpendicular, at the mid-points of N equal slices, with endpoints on the LV border
(X1 septal side, X2 lateral side). Volumes use the single-plane method of disks.
"""

from __future__ import annotations

import numpy as np

from echomotion.phantom.anatomy import REFERENCE_SIZE, Chamber

N_CHORDS = 20
PIXEL_CM = 0.14  # pixel spacing of a 112 x 112 frame


def pixel_cm(size: int) -> float:
    """Pixel spacing (cm) of a ``size`` x ``size`` frame of the same field of view."""
    return PIXEL_CM * REFERENCE_SIZE / size


def lv_tracing(lv: Chamber, long: float, short: float, n_chords: int = N_CHORDS) -> np.ndarray:
    """Long axis and ``n_chords`` chords of the LV scaled by (long, short): (1 + n, 4)."""
    ax, nx = np.asarray(lv.axis), np.asarray(lv.normal)
    length = lv.length * long
    apex = np.asarray(lv.anchor) + lv.start * long * ax
    p = (np.arange(n_chords) + 0.5) * length / n_chords + lv.start * long
    half = lv.half_width(p, long, short)[:, None]
    centre = np.asarray(lv.anchor) + p[:, None] * ax  # (n, 2)
    chords = np.concatenate([centre - half * nx, centre + half * nx], axis=1)  # (n, 4)
    axis_row = np.concatenate([apex, apex + length * ax])[None]  # (1, 4)
    return np.concatenate([axis_row, chords])


def disk_volume_ml(tracing: np.ndarray, spacing_cm: float) -> float:
    """Method of disks: sum of pi/4 d_i^2 h, h = long axis / number of chords (mL)."""
    x1, y1, x2, y2 = np.asarray(tracing, dtype=np.float64).T
    length = np.hypot(x2[0] - x1[0], y2[0] - y1[0])
    diam = np.hypot(x2[1:] - x1[1:], y2[1:] - y1[1:])
    return float(np.pi / 4.0 * np.sum(diam**2) * length / len(diam) * spacing_cm**3)
