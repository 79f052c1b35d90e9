"""A perfect motion transfer in the phantom: one video's anatomy and appearance, moving
with another video's motion.

A phantom video is fixed by its :class:`~echomotion.phantom.identity.VideoIdentity`. Its
motion is the part of it that says when and how much the chambers contract (heart rate,
clip length, systole share, start phase, EF and each chamber's end-systolic scales, which
:mod:`.motion` applies to whatever anatomy it is given); everything else (chamber shapes,
placement, gain, speckle, sector) is its anatomy and appearance. Swapping the motion
fields renders what a generator that transfers motion exactly would produce: the
reference video's first ED frame, contracting as the driver does. The ``transfer_oracle``
stage scores these videos with the evaluation's motion measures, which gives those
measures' ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from echomotion.phantom.anatomy import build_anatomy
from echomotion.phantom.identity import VideoIdentity, sample_identity
from echomotion.phantom.params import PhantomParams
from echomotion.phantom.simulate import render, timeline, video_rng

MOTION_FIELDS = (
    "heart_rate_bpm", "n_frames", "systole_fraction", "start_phase", "target_ef",
    "lv_long_es", "lv_short_es", "rv_long_es", "rv_short_es", "atrium_widen_es",
)  # fmt: skip


@dataclass(frozen=True)
class TransferVideo:
    """Frames and chamber labels ``(T, H, W)`` at the phantom's frame rate, and the traced
    ED and ES frames (those of the motion video: the timeline is its own)."""

    frames: np.ndarray
    labels: np.ndarray
    ed: int
    es: int


def transferred_identity(appearance: VideoIdentity, motion: VideoIdentity) -> VideoIdentity:
    """``appearance`` with the :data:`MOTION_FIELDS` of ``motion``."""
    return replace(appearance, **{name: getattr(motion, name) for name in MOTION_FIELDS})


def simulate_transfer(
    params: PhantomParams, seed: int, appearance: int, motion: int, decorrelate: bool = True
) -> TransferVideo:
    """Video ``appearance`` of the phantom with seed ``seed``, moving as video ``motion``
    does (``appearance == motion`` renders that video as :func:`simulate_video` does)."""
    ident = transferred_identity(
        sample_identity(video_rng(seed, appearance), params),
        sample_identity(video_rng(seed, motion), params),
    )
    s, ed, es = timeline(ident, params.fps)
    anatomy = build_anatomy(ident, params.size)
    _, frames, labels = render(anatomy, ident, s, params.size, decorrelate)
    return TransferVideo(frames, labels, ed, es)
