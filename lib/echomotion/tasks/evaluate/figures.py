"""``lv_area.png``: LV area over time of each driver and its generated videos, one panel
per driver (drawn with OpenCV: the project has no plotting library)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

PANEL = (150, 260)  # height, width of one panel, pixels
MARGIN = 24  # left/bottom margin for the axis labels
COLOURS = {"driver": (0, 0, 0), "self": (200, 110, 0), "transfer": (0, 90, 220)}  # BGR


def series_name(kind: str, k: int) -> str:
    """The series of a driver's ``k``-th (0-based) generated video of ``kind``: ``kind``
    itself for the first, ``<kind><k + 1>`` after it (``transfer``, ``transfer2``, ...)."""
    return kind if k == 0 else f"{kind}{k + 1}"


def kind_of(series: str) -> str:
    """The kind of a series named by :func:`series_name` (what :data:`COLOURS` is keyed by)."""
    return series.rstrip("0123456789")


def _text(image: np.ndarray, text: str, x: int, y: int, colour=(0, 0, 0)) -> None:
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)


def _panel(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> np.ndarray:
    """One driver: a line per series (driver, self, transfer, transfer2, ...) over shared
    axes, each coloured by its kind (the series name without its number)."""
    h, w = PANEL
    image = np.full((h, w, 3), 255, dtype=np.uint8)
    t_max = max(float(t.max()) for t, _ in curves.values()) or 1.0
    a_min = min(float(a.min()) for _, a in curves.values())
    a_max = max(float(a.max()) for _, a in curves.values())
    span = max(a_max - a_min, 1.0)
    x0, y0, x1, y1 = MARGIN + 8, 18, w - 6, h - MARGIN

    def point(t: float, a: float) -> tuple[int, int]:
        return (round(x0 + (x1 - x0) * t / t_max), round(y1 - (y1 - y0) * (a - a_min) / span))

    cv2.rectangle(image, (x0, y0), (x1, y1), (160, 160, 160), 1)
    for series, (times, areas) in curves.items():
        pts = np.array([point(t, a) for t, a in zip(times, areas, strict=True)], np.int32)
        colour = COLOURS.get(kind_of(series), (120, 120, 120))
        cv2.polylines(image, [pts], False, colour, 1, cv2.LINE_AA)
    _text(image, title, x0, 12)
    _text(image, f"{a_max:.0f}", 2, y0 + 8)
    _text(image, f"{a_min:.0f}", 2, y1)
    _text(image, "0", x0 - 3, h - 8)
    _text(image, f"{t_max:.1f} s", x1 - 34, h - 8)
    return image


def lv_area_figure(rows: list[dict], max_panels: int = 8, columns: int = 4) -> np.ndarray | None:
    """BGR image of the ``lv_area.csv`` rows (``series`` = ``<driver>/<kind>``,
    ``time_s``, ``area_px``): a panel per driver (the first ``max_panels``) and a legend;
    None without rows."""
    by_driver: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(dict)
    for row in rows:
        driver, kind = str(row["series"]).rsplit("/", 1)
        by_driver[driver].setdefault(kind, []).append((row["time_s"], row["area_px"]))
    if not by_driver:
        return None
    panels = []
    for driver in list(by_driver)[:max_panels]:
        curves = {k: tuple(np.array(v).T) for k, v in by_driver[driver].items()}
        panels.append(_panel(curves, driver[:22]))
    while len(panels) % columns:
        panels.append(np.full_like(panels[0], 255))
    grid = np.concatenate(
        [np.concatenate(panels[i : i + columns], axis=1) for i in range(0, len(panels), columns)]
    )
    legend = np.full((20, grid.shape[1], 3), 255, dtype=np.uint8)
    _text(legend, "LV area (px) over time:", 4, 14)
    for i, (kind, colour) in enumerate(COLOURS.items()):
        x = 170 + 110 * i
        cv2.line(legend, (x, 10), (x + 24, 10), colour, 2)
        _text(legend, kind, x + 30, 14)
    return np.concatenate([legend, grid])


def no_curves_figure(reason: str) -> np.ndarray:
    """BGR image that states why there are no LV-area curves (the plot is a declared output)."""
    image = np.full((40, 4 * PANEL[1], 3), 255, dtype=np.uint8)
    _text(image, f"No LV-area curves: {reason}", 6, 24)
    return image


def save_lv_area_figure(rows: list[dict], path: str | Path) -> None:
    """Write :func:`lv_area_figure` as a PNG; without rows, :func:`no_curves_figure`."""
    path = Path(path)
    image = lv_area_figure(rows)
    if image is None:
        image = no_curves_figure("no LV segmenter (no TRAIN tracings) or no synthetic video")
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
