"""One phantom video: identity -> anatomy -> motion -> frames, labels and tracings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from echomotion.phantom.anatomy import Anatomy, build_anatomy
from echomotion.phantom.identity import VideoIdentity, sample_identity
from echomotion.phantom.motion import (
    Inverse,
    cardiac_phase,
    chamber_scales,
    deform,
    end_scales,
    forward_field,
)
from echomotion.phantom.params import PhantomParams
from echomotion.phantom.render import Renderer
from echomotion.phantom.tracings import disk_volume_ml, lv_tracing, pixel_cm

BLOCK = 8  # frames deformed and rendered at once (arrays stay in cache)


@dataclass(frozen=True)
class PhantomVideo:
    """Everything generated for one video (arrays are per frame along axis 0)."""

    ident: VideoIdentity
    anatomy: Anatomy
    frames: np.ndarray  # (T, H, W) uint8
    labels: np.ndarray  # (T, H, W) uint8
    displacement: np.ndarray  # (T, 2, H, W) float32, backward map to ED, pixels
    phase: np.ndarray  # (T,) float32, 0 = ED, 1 = ES
    lv_volume_ml: np.ndarray  # (T,) float32
    ed_frame: int
    es_frame: int
    tracings: dict[int, np.ndarray]  # traced frame -> (1 + N, 4) X1, Y1, X2, Y2

    @property
    def edv(self) -> float:
        return float(self.lv_volume_ml[self.ed_frame])

    @property
    def esv(self) -> float:
        return float(self.lv_volume_ml[self.es_frame])

    @property
    def ef(self) -> float:
        return 100.0 * (self.edv - self.esv) / self.edv


def video_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of video ``index``: depends on (seed, index) only."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, index)))


def timeline(ident: VideoIdentity, fps: float) -> tuple[np.ndarray, int, int]:
    """Contraction s (T,) and the traced ED and ES frames (the first whole systole)."""
    step = ident.heart_rate_bpm / 60.0 / fps  # cycles per frame
    s = cardiac_phase(ident.start_phase + step * np.arange(ident.n_frames), ident.systole_fraction)
    cycle = math.ceil(ident.start_phase)
    ed = round((cycle - ident.start_phase) / step)
    es = round((cycle + ident.systole_fraction - ident.start_phase) / step)
    return s.astype(np.float32), ed, min(es, ident.n_frames - 1)


def render(anatomy, ident, s, size, decorrelate):
    """Displacements, frames and labels of every frame, BLOCK frames at a time."""
    ends = end_scales(anatomy, ident)
    inverse = Inverse(forward_field(anatomy, ends, size))
    renderer = Renderer(anatomy, ident, size, decorrelate)
    disp, frames, labels = [], [], []
    for start in range(0, ident.n_frames, BLOCK):
        sb = s[start : start + BLOCK]
        scales = {name: chamber_scales(end, sb) for name, end in ends.items()}
        u, pools = deform(anatomy, inverse, sb, scales)
        img, lab = renderer.render(u, pools)
        disp.append(u), frames.append(img), labels.append(lab)
    return np.concatenate(disp), np.concatenate(frames), np.concatenate(labels)


def simulate_video(
    params: PhantomParams, seed: int, index: int, decorrelate: bool = True
) -> PhantomVideo:
    """Generate video ``index`` of the phantom with seed ``seed``."""
    # 1. identity and anatomy
    ident = sample_identity(video_rng(seed, index), params)
    anatomy = build_anatomy(ident, params.size)
    # 2. contraction over time; 3. backward displacement and rendering
    s, ed, es = timeline(ident, params.fps)
    disp, frames, labels = render(anatomy, ident, s, params.size, decorrelate)
    # 4. LV tracings and volumes (method of disks) of every frame
    lv, spacing = anatomy.chamber("LV"), pixel_cm(params.size)
    lv_scales = chamber_scales(end_scales(anatomy, ident)["LV"], s)
    tracing = [lv_tracing(lv, float(lo), float(sh)) for lo, sh in zip(*lv_scales, strict=True)]
    volumes = np.array([disk_volume_ml(t, spacing) for t in tracing], dtype=np.float32)
    return PhantomVideo(
        ident, anatomy, frames, labels, disp, s, volumes, ed, es, {ed: tracing[ed], es: tracing[es]}
    )
