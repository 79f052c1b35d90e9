"""What a set of vectors encodes: EF by ridge regression, identity by retrieval.

Used by stage ``features`` to measure the method's disentanglement claim (motion vectors
carry the heart's function, appearance vectors the video's identity).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from echomotion.reid.metrics import rank1_and_map
from echomotion.section import SPLITS as ALL_SPLITS


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """Closed-form ridge regression of ``y`` (N,) on standardised ``x`` (N, D) with an
    unpenalised intercept; returns the predictor of new rows (M, D) -> (M,)."""
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    z, y_mean = (x - mean) / std, y.mean()
    n, d = z.shape
    if n <= d:  # dual form: w = Z^T (Z Z^T + alpha I)^-1 y
        w = z.T @ np.linalg.solve(z @ z.T + alpha * np.eye(n), y - y_mean)
    else:
        w = np.linalg.solve(z.T @ z + alpha * np.eye(d), z.T @ (y - y_mean))
    return lambda q: ((q - mean) / std) @ w + y_mean


def r_squared(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination (NaN for fewer than 2 targets or constant targets)."""
    total = float(((y - y.mean()) ** 2).sum()) if len(y) > 1 else 0.0
    return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else float("nan")


def ef_probe(
    x: np.ndarray, ef: np.ndarray, split: np.ndarray, alphas: tuple[float, ...]
) -> dict[str, float]:
    """Ridge EF probe: alpha with the best VAL R-squared (fit on TRAIN), refit on
    TRAIN + VAL, R-squared on TEST. Videos without EF are left out; with fewer than two
    VAL videos the median alpha is used. Fewer than two labelled TRAIN or TEST videos:
    ``{"skipped": reason}`` and the counts (no R-squared can be had)."""
    known = np.isfinite(ef)
    part = {s: known & (split == s) for s in ALL_SPLITS}
    counts = {f"n_{s.lower()}": int(part[s].sum()) for s in ALL_SPLITS}
    for s in ("TRAIN", "TEST"):
        if part[s].sum() < 2:
            n = int(part[s].sum())
            why = f"no EF labels in {s}" if n == 0 else f"only {n} {s} video with an EF label"
            return {"skipped": why, **counts}
    scores = {
        a: r_squared(
            ef[part["VAL"]], fit_ridge(x[part["TRAIN"]], ef[part["TRAIN"]], a)(x[part["VAL"]])
        )
        for a in alphas
    }
    valid = {a: s for a, s in scores.items() if np.isfinite(s)}
    alpha = max(valid, key=valid.get) if valid else sorted(alphas)[len(alphas) // 2]
    fit = part["TRAIN"] | part["VAL"]
    predict = fit_ridge(x[fit], ef[fit], alpha)
    return {
        "r2_test": r_squared(ef[part["TEST"]], predict(x[part["TEST"]])),
        "r2_val": scores[alpha],
        "alpha": float(alpha),
        **counts,
    }


def identity_retrieval(
    query: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray,
    mean: np.ndarray, std: np.ndarray,
) -> dict[str, float]:  # fmt: skip
    """Rank-1 / mAP (cosine of standardised vectors) with their chance levels."""
    return rank1_and_map((query - mean) / std, query_ids, (gallery - mean) / std, gallery_ids)
