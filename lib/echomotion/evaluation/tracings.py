"""LV masks from EchoNet-Dynamic's VolumeTracings.csv, at the prepared frame size and rate.

A traced frame is a (1 + N, 4) array of (X1, Y1, X2, Y2) rows in source pixels: row 0 is
the long axis, rows 1..N are chords across the LV whose endpoints lie on its border. The
outline is one side of chord endpoints down and the other back up, as in EchoNet-Dynamic's
own mask construction (and :func:`echomotion.echonet.traced_area`).

``prepare`` resizes every source frame to the store's size and resamples it to the store's
frame rate; a tracing is moved the same way: coordinates scaled by stored / source size
(pixel centres aligned), the traced source frame mapped to the stored frame nearest in time.
Masks serve evaluation only (the LV-area EF estimator), never the generator.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from echomotion.echonet import FILE_LIST, TRACING_COLUMNS, TRACINGS, check_file_name

log = logging.getLogger(__name__)


def read_traced_frames(root: Path, known: set[str]) -> dict[str, dict[int, np.ndarray]]:
    """Per video of ``known`` with tracings: source frame -> its (1 + N, 4) tracing.

    No ``VolumeTracings.csv``: no video has tracings. A video with an unusable row (a
    coordinate that is not a number) is left out whole, with a warning; rows of other
    videos and frames with fewer than three rows (no outline) are ignored.
    """
    path = Path(root) / TRACINGS
    if not path.is_file():
        log.warning("%s not found: no LV tracings", path)
        return {}
    rows: dict[str, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    bad: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        reader.fieldnames = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in TRACING_COLUMNS if c not in reader.fieldnames]
        if missing:
            log.warning("%s: missing column(s) %s: no LV tracings", path, ", ".join(missing))
            return {}
        for row in reader:
            try:
                name = check_file_name(row["FileName"] or "")
            except ValueError:
                continue
            if name not in known or name in bad:
                continue
            try:
                values = [float(row[c]) for c in ("X1", "Y1", "X2", "Y2", "Frame")]
            except (TypeError, ValueError):
                values = [math.nan]
            if not all(math.isfinite(v) for v in values) or values[-1] < 0:
                log.warning("%s: unusable row of %s: its tracings are left out", path, name)
                bad.add(name)
                continue
            rows[name][int(values[-1])].append(values[:4])
    return {
        name: {k: np.asarray(v, dtype=np.float64) for k, v in frames.items() if len(v) >= 3}
        for name, frames in rows.items()
        if name not in bad
    }


def read_source_sizes(root: Path) -> dict[str, tuple[int, int]]:
    """(FrameHeight, FrameWidth) of every FileList row that states both."""
    path = Path(root) / FILE_LIST
    sizes = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            try:
                name = check_file_name(row.get("FileName") or "")
                h, w = int(float(row["FrameHeight"])), int(float(row["FrameWidth"]))
            except (KeyError, TypeError, ValueError):
                continue
            if h > 0 and w > 0:
                sizes[name] = (h, w)
    return sizes


def outline(tracing: np.ndarray) -> np.ndarray:
    """LV outline (2N, 2) as (x, y): the X1 chord ends in order, then the X2 ends reversed."""
    x1, y1, x2, y2 = np.asarray(tracing, dtype=np.float64).T
    return np.stack(
        [np.concatenate([x1[1:], x2[1:][::-1]]), np.concatenate([y1[1:], y2[1:][::-1]])], 1
    )


def polygon_mask(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels (H, W) whose centre (x = column, y = row) is inside ``polygon`` (K, 2) (x, y),
    by the even-odd rule."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    inside = np.zeros(shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        if ya == yb:
            continue
        crosses = (ya > yy) != (yb > yy)
        x_at = xa + (yy - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (xx < x_at)
    return inside


def tracing_mask(
    tracing: np.ndarray, source_size: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """The LV mask (H, W) bool of one tracing drawn at the stored ``size`` = (H, W)."""
    scale = np.array([size[1] / source_size[1], size[0] / source_size[0]])  # (x, y)
    return polygon_mask((outline(tracing) + 0.5) * scale - 0.5, size)


def stored_frame(source_frame: int, source_fps: float, fps: float, n_frames: int) -> int:
    """The stored frame nearest in time to ``source_frame`` (stored frame k is at k / fps)."""
    return int(np.clip(round(source_frame * fps / source_fps), 0, n_frames - 1))
