"""Per-video random choices: timing, contraction and appearance ("identity").

Everything one video needs is sampled here, once, from that video's own generator, in a
fixed order, so a video depends only on (seed, index). Lengths are in pixels of a
112 x 112 frame; :mod:`.anatomy` scales them to the frame size. The ranges below are the
phantom's only free constants.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from echomotion.phantom.params import PhantomParams

# Ranges (low, high) of the uniform draws; lengths in pixels at 112 x 112.
LV_LENGTH = (48.0, 56.0)  # apex to mitral annulus at ED
LV_HALF_WIDTH = (15.0, 18.5)
LV_TRUNCATION = (0.45, 0.6)  # base cut at a * (1 + kappa) along the ellipse axis
LV_TILT_DEG = (8.0, 16.0)  # long axis vs the vertical, base to the right
LV_LONG_SHORTENING = (0.2, 0.3)  # 1 - L_ES / L_ED = EF * this
RV_WIDTH_RATIO = (0.65, 0.8)
RV_TRUNCATION = (0.3, 0.45)
RV_APEX_FRACTION = (0.25, 0.35)  # RV apex this far down the LV axis
RV_BASE_DESCENT = (0.9, 1.1)  # RV long-axis shortening / LV long-axis shortening
RV_SHORT_ES = (0.85, 0.93)
ATRIUM_HALF_LENGTH = (8.5, 10.5)
LA_HALF_WIDTH = (11.5, 14.0)
RA_WIDTH_RATIO = (0.8, 0.95)
ATRIUM_WIDEN_ES = (1.03, 1.08)  # atria widen while the ventricles contract
WALL = (5.0, 7.5)  # LV myocardium thickness
SEPTUM = (4.5, 6.5)  # minimum gap between LV and RV (and between the atria)
VALVE_GAP = (3.0, 4.5)  # annulus / valve plane between ventricle and atrium
ZOOM = (0.95, 1.05)
ROTATION_DEG = (-6.0, 6.0)
OFFSET = ((-4.0, 4.0), (-3.0, 3.0))  # x, y
GAIN_DB = (-4.0, 4.0)
ATTENUATION_DB_CM = (0.4, 1.0)
DYNAMIC_RANGE_DB = (38.0, 46.0)
MYOCARDIUM = (0.5, 0.9)  # reflectivities (amplitude, 1 = brightest)
TISSUE = (0.07, 0.14)
BLOOD = (0.01, 0.025)
SPECKLE_SIGMA = ((0.55, 0.8), (0.8, 1.2))  # axial (rows), lateral (columns)
SECTOR_ANGLE_DEG = (70.0, 80.0)
SECTOR_DEPTH = (0.93, 0.99)  # fraction of the frame height
DECORRELATION = (0.03, 0.08)  # weight of the fresh speckle in each frame


@dataclass(frozen=True)
class VideoIdentity:
    """All per-video random choices; ``row()`` gives them as a table row."""

    heart_rate_bpm: float
    n_frames: int
    systole_fraction: float
    start_phase: float
    target_ef: float
    lv_long_es: float
    lv_short_es: float
    rv_long_es: float
    rv_short_es: float
    atrium_widen_es: float
    lv_length: float
    lv_half_width: float
    lv_truncation: float
    lv_tilt_deg: float
    rv_width_ratio: float
    rv_truncation: float
    rv_apex_fraction: float
    la_half_length: float
    la_half_width: float
    ra_half_length: float
    ra_width_ratio: float
    wall: float
    septum: float
    valve_gap: float
    zoom: float
    rotation_deg: float
    offset_x: float
    offset_y: float
    gain_db: float
    attenuation_db_cm: float
    dynamic_range_db: float
    myocardium: float
    tissue: float
    blood: float
    speckle_sigma_axial: float
    speckle_sigma_lateral: float
    sector_angle_deg: float
    sector_depth: float
    decorrelation: float
    speckle_seed: int

    def row(self) -> dict[str, Any]:
        return asdict(self)


def systole_fraction(heart_rate_bpm: float) -> float:
    """Fraction of the cycle spent in systole: about a third, longer at faster rates."""
    return float(np.clip(0.30 + 0.1 * (heart_rate_bpm - 60.0) / 50.0, 0.28, 0.42))


def sample_start_phase(rng: np.random.Generator, n_frames: int, step: float, sys: float) -> float:
    """Cycle phase of frame 0, so that one whole systole (ED then ES) lies in the clip.

    ``step`` is the phase advance per frame (cycles); the clip spans (n_frames-1)*step.
    """
    span = (n_frames - 1) * step
    if span < sys:
        raise ValueError(
            f"a clip of {n_frames} frames covers {span:.2f} cardiac cycles, less than one "
            f"systole ({sys:.2f}): raise phantom.duration_s or phantom.heart_rate_bpm"
        )
    return float(rng.uniform(max(0.0, 1.0 - (span - sys)), 1.0))


def sample_identity(rng: np.random.Generator, params: PhantomParams) -> VideoIdentity:
    """Draw one video's identity from ``rng`` (a fixed sequence of draws)."""
    u = rng.uniform
    hr = u(*params.heart_rate_bpm)
    n_frames = max(2, round(u(*params.duration_s) * params.fps))
    sys = systole_fraction(hr)
    start = sample_start_phase(rng, n_frames, hr / 60.0 / params.fps, sys)
    ef = u(*params.ef_percent) / 100.0
    lv_long = 1.0 - ef * u(*LV_LONG_SHORTENING)
    return VideoIdentity(
        heart_rate_bpm=hr, n_frames=n_frames, systole_fraction=sys, start_phase=start,
        target_ef=100.0 * ef, lv_long_es=lv_long, lv_short_es=math.sqrt((1.0 - ef) / lv_long),
        rv_long_es=1.0 - (1.0 - lv_long) * u(*RV_BASE_DESCENT), rv_short_es=u(*RV_SHORT_ES),
        atrium_widen_es=u(*ATRIUM_WIDEN_ES), lv_length=u(*LV_LENGTH),
        lv_half_width=u(*LV_HALF_WIDTH), lv_truncation=u(*LV_TRUNCATION),
        lv_tilt_deg=u(*LV_TILT_DEG), rv_width_ratio=u(*RV_WIDTH_RATIO),
        rv_truncation=u(*RV_TRUNCATION), rv_apex_fraction=u(*RV_APEX_FRACTION),
        la_half_length=u(*ATRIUM_HALF_LENGTH), la_half_width=u(*LA_HALF_WIDTH),
        ra_half_length=u(*ATRIUM_HALF_LENGTH), ra_width_ratio=u(*RA_WIDTH_RATIO),
        wall=u(*WALL), septum=u(*SEPTUM), valve_gap=u(*VALVE_GAP), zoom=u(*ZOOM),
        rotation_deg=u(*ROTATION_DEG), offset_x=u(*OFFSET[0]), offset_y=u(*OFFSET[1]),
        gain_db=u(*GAIN_DB), attenuation_db_cm=u(*ATTENUATION_DB_CM),
        dynamic_range_db=u(*DYNAMIC_RANGE_DB), myocardium=u(*MYOCARDIUM), tissue=u(*TISSUE),
        blood=u(*BLOOD), speckle_sigma_axial=u(*SPECKLE_SIGMA[0]),
        speckle_sigma_lateral=u(*SPECKLE_SIGMA[1]), sector_angle_deg=u(*SECTOR_ANGLE_DEG),
        sector_depth=u(*SECTOR_DEPTH), decorrelation=u(*DECORRELATION),
        speckle_seed=int(rng.integers(2**31)),
    )  # fmt: skip
