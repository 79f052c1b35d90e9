"""Motion-transfer checks beside the motion metrics: is the appearance kept, and does a
self-driven video reproduce its driver?

- Appearance: a transfer-mode video takes its appearance from one real video (its
  reference frame) and its motion from another; its ReID video embedding should be nearer
  to the appearance source's than to the motion source's (chance 0.5).
- Self-mode SSIM: a video driven by its own source should match that video frame by
  frame, far better than it matches other real videos. Frames are matched by time
  (``t = frame / fps``), both videos starting at frame 0, since generated and prepared
  videos may run at different rates.
"""

from __future__ import annotations

import numpy as np

from echomotion.data import to_tensor
from echomotion.diffusion.metrics import ssim
from echomotion.video import resample_indices


def time_matched(
    n_generated: int, fps_generated: float, n_real: int, fps_real: float
) -> tuple[np.ndarray, np.ndarray]:
    """Frame pairs at the same time: generated frame i and the real frame nearest to
    ``i / fps_generated``, for the generated frames within the real video's duration."""
    real = resample_indices(n_real, fps_real, fps_generated)[:n_generated]
    return np.arange(len(real)), real


def mean_ssim(
    generated: np.ndarray, real: np.ndarray, fps_generated: float, fps_real: float
) -> float:
    """Mean SSIM (data range 1 on [0, 1] frames) of time-matched uint8 frames (T, H, W);
    NaN when no frame pair exists."""
    gen, ref = time_matched(len(generated), fps_generated, len(real), fps_real)
    if len(gen) == 0:
        return float("nan")
    return float(ssim(to_tensor(generated[gen]), to_tensor(real[ref]), data_range=1.0).mean())


def nearer_fraction(query: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Fraction of unit rows of ``query`` (N, D) more cosine-similar to the matching row of
    ``first`` than to that of ``second`` (both (N, D))."""
    return float(((query * first).sum(1) > (query * second).sum(1)).mean())
