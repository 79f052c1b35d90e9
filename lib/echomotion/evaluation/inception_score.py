"""The Inception Score (Salimans et al. 2016) as StyleGAN-V computes ``is50k``.

``IS = exp(E_x KL(p(y|x) || p(y)))``, with ``p(y)`` the mean of the class probabilities
over each of ``splits`` consecutive parts of the samples; the score is the mean (and the
standard deviation) over the parts (StyleGAN-V ``src/metrics/inception_score.py``: 10
splits of 50000 generated frames).
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over ``splits`` parts of ``exp(mean KL(p(y|x) || p(y)))``
    of class probabilities ``probs`` (N, K); ``0 log 0`` counts as 0."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) < splits:
        raise ValueError(f"need (N, K) probabilities with N >= splits={splits}, got {p.shape}")
    n, scores = len(p), []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)  # (1, K)
        kl = (xlogy(part, part) - xlogy(part, marginal)).sum(axis=1)  # (n_part,)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
