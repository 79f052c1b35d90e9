"""Label-free end-diastole / end-systole detection.

Real archives often have no tracings. In an apical four-chamber view the ventricles
fill the upper part of the sector: their blood pools are darkest and largest at ED and
smallest at ES. The detector measures, per frame, the dark (blood) area in the upper
part of the sector, smooths it over time, and takes its peaks as ED and its troughs as
ES. It needs no weights and no labels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.signal import find_peaks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdEs:
    ed: int  # chosen ED frame (-1 when no cycle was found)
    es: int  # chosen ES frame after or before it
    ed_all: np.ndarray  # every detected ED (peaks of the blood-area signal)
    es_all: np.ndarray  # every detected ES (troughs)
    signal: np.ndarray  # (T,) smoothed blood area in pixels


def blood_area(frames: np.ndarray, top_fraction: float = 0.65) -> np.ndarray:
    """Dark-pixel count per frame in the upper ``top_fraction`` of the sector.

    The sector is where any frame is non-black; the dark threshold is a low
    percentile of the time-averaged intensity inside it, shared by all frames so the
    signal is comparable over time.
    """
    frames = frames[:, ::2, ::2]  # half resolution is plenty for an area signal
    smooth = gaussian_filter(frames.astype(np.float32), sigma=(0, 0.75, 0.75))  # (T, H, W)
    sector = frames.max(axis=0) > 8
    rows = np.flatnonzero(sector.any(axis=1))
    if rows.size == 0:
        return np.zeros(len(frames))
    cut = rows[0] + int(top_fraction * (rows[-1] - rows[0] + 1))
    region = sector.copy()
    region[cut:] = False
    inside = smooth[:, region]  # (T, n_pixels)
    threshold = np.percentile(inside.mean(axis=0), 35)
    return (inside < threshold).sum(axis=1).astype(np.float64)


def detect_ed_es(frames: np.ndarray, fps: float, max_heart_rate_bpm: float = 150.0) -> EdEs:
    """ED and ES frames of a grayscale (T, H, W) uint8 video without labels."""
    signal = gaussian_filter1d(blood_area(frames), sigma=max(fps / 25.0, 0.5))
    min_gap = max(int(fps * 60.0 / max_heart_rate_bpm * 0.5), 1)
    ed_all = _extremes(signal, min_gap)
    es_all = _extremes(-signal, min_gap)
    ed, es = _best_pair(signal, ed_all, es_all)
    return EdEs(ed, es, ed_all, es_all, signal)


# An extreme at the first or last frame counts only when the signal there lies at least this
# far from the typical trough towards the typical peak of the clip's interior cycles. Measured
# on the 64 default phantom videos against their true phase (metrics/edes.json, README
# "Label-free ED/ES"): with no such rule 7 videos' first window started mid-cycle (true phase
# 0.26-0.74: a clip starting in systole counted as an ED), the heart rate was off by 3.9 bpm
# and the detected EDs by 2.1 frames on average; at 0.75 none started mid-cycle, 2.5 bpm and
# 0.7 frames (0.5: 2 videos, 2.9 bpm, 1.3 frames; 0.8: 0 videos, 3.2 bpm, 0.7 frames).
EDGE_LEVEL = 0.75


def _extremes(signal: np.ndarray, min_gap: int) -> np.ndarray:
    """The maxima of ``signal`` ``(T,)``, the first and last frame included when they are
    near the height of the interior maxima (:data:`EDGE_LEVEL`)."""
    prominence = 0.1 * (np.ptp(signal) + 1e-9)
    # padding with the minimum lets a clip that starts or ends at an extreme count it
    # (EchoNet clips often start at ED); undo the one-frame shift afterwards
    found = find_peaks(np.pad(signal, 1, mode="minimum"), distance=min_gap,
                       prominence=prominence)[0] - 1  # fmt: skip
    inside = (found > 0) & (found < len(signal) - 1)
    troughs = find_peaks(-signal, distance=min_gap, prominence=prominence)[0]
    if not inside.any() or troughs.size == 0:  # no full cycle inside: edges as found
        return found
    peak, trough = np.median(signal[found[inside]]), np.median(signal[troughs])
    edge_floor = trough + EDGE_LEVEL * (peak - trough)
    return found[inside | (signal[found] >= edge_floor)]


def _best_pair(signal: np.ndarray, eds: np.ndarray, ess: np.ndarray) -> tuple[int, int]:
    """The adjacent (ED, ES) pair with the largest change of blood area."""
    best, pair = -np.inf, (-1, -1)
    for ed in eds:
        for es in ess:
            between = (eds > min(ed, es)) & (eds < max(ed, es))
            if between.any():  # not adjacent: another ED lies between them
                continue
            if signal[ed] - signal[es] > best:
                best, pair = signal[ed] - signal[es], (int(ed), int(es))
    return pair


def contraction_curve(signal: np.ndarray) -> np.ndarray:
    """The contraction ``(T,)`` of a video from its :attr:`EdEs.signal`: 0 where the blood
    area is largest in the clip (ED), 1 where it is smallest (ES), linear in between; all 0
    for a still video. It says when the heart contracts, not by how much (the motion vector
    says that), and is label-free."""
    signal = np.asarray(signal, np.float64)
    if signal.size == 0:
        return np.zeros(0, np.float32)
    top, span = signal.max(), np.ptp(signal)
    if not span > 1e-6 * max(abs(top), 1.0):
        return np.zeros(len(signal), np.float32)
    return ((top - signal) / span).astype(np.float32)


def nearest_error(detected: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each detected frame, the distance in frames to the nearest true one."""
    if len(detected) == 0 or len(truth) == 0:
        return np.array([])
    return np.abs(detected[:, None] - truth[None, :]).min(axis=1).astype(np.float64)


def mean_error(errors: list[float]) -> float:
    """Mean of the finite frame errors; NaN when there is none (nothing to compare)."""
    finite = [e for e in errors if np.isfinite(e)]
    return float(np.mean(finite)) if finite else float("nan")


@dataclass(frozen=True)
class Beats:
    """Label-free beats of one video: its detected ED frames (:func:`detect_ed_es`), its
    length and frame rate, and its contraction curve; the window starts, heart rate and
    per-frame contraction come from them, so a video is searched once for all three."""

    eds: np.ndarray  # detected ED frames (empty: none)
    n_frames: int
    fps: float
    contraction: np.ndarray | None = None  # (n_frames,) :func:`contraction_curve`; None: unknown

    @classmethod
    def detect(cls, frames: np.ndarray, fps: float) -> Beats:
        """The beats of a grayscale ``(T, H, W)`` video at ``fps``."""
        return cls.from_detection(detect_ed_es(frames, fps), len(frames), fps)

    @classmethod
    def from_detection(cls, found: EdEs, n_frames: int, fps: float) -> Beats:
        """The beats of an ``n_frames`` video at ``fps`` from its :func:`detect_ed_es`
        result (for a caller that also needs the detection itself)."""
        eds = np.asarray(found.ed_all, np.int64)
        return cls(eds, n_frames, fps, contraction_curve(found.signal))

    def contraction_from(self, start: int, n: int, fps: float | None = None) -> np.ndarray:
        """The contraction ``(n,)`` float32 of ``n`` frames at ``fps`` (the video's when
        None or 0) from frame ``start``, each at its nearest video frame, a frame past the
        video's end at its last; ValueError without a curve."""
        if self.contraction is None or len(self.contraction) == 0:
            raise ValueError("these beats have no contraction curve (Beats.detect makes one)")
        step = self.fps / fps if fps and self.fps > 0 else 1.0
        index = start + np.round(np.arange(n) * step).astype(np.int64)
        return self.contraction[np.clip(index, 0, len(self.contraction) - 1)].astype(np.float32)

    @property
    def heart_rate(self) -> float:
        """Beats per minute (:func:`heart_rate_bpm`); NaN with fewer than two EDs."""
        return heart_rate_bpm(self.eds, self.fps)

    def window_anchors(self, span: int) -> np.ndarray:
        """The ED frames from which a window of ``span`` stored frames fits in the video.
        When every ED is too late for one, the last full window (starting before the first
        ED); empty when no ED was found or the video is shorter than ``span``."""
        last = self.n_frames - span
        if last < 0 or self.eds.size == 0:
            return np.zeros(0, np.int64)
        fits = self.eds[self.eds <= last]
        return fits if fits.size else np.array([min(int(self.eds.min()), last)], np.int64)


def heart_rate_bpm(eds: np.ndarray, fps: float) -> float:
    """Beats per minute from detected ED frames ``eds`` of a video at ``fps``: 60 fps over
    the median ED-to-ED interval; NaN with fewer than two EDs or no frame rate."""
    gaps = np.diff(np.sort(np.asarray(eds, np.float64)))
    if gaps.size == 0 or not fps > 0:
        return float("nan")
    return float(60.0 * fps / np.median(gaps))


def heart_rate_or_default(rate: float, video: str) -> float | None:
    """``rate`` when known; None (the pipeline's training median heart rate is then used)
    with a warning naming ``video`` when it is NaN (fewer than two EDs detected)."""
    if math.isnan(rate):
        logger.warning("%s: fewer than two EDs detected; the training median heart rate is used",
                       video)  # fmt: skip
        return None
    return rate
