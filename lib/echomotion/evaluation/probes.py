"""What a set of vectors encodes: EF by ridge regression, identity by retrieval.

Used by stage ``features`` to measure the method's disentanglement claim (motion vectors
carry the heart's function, appearance vectors the video's identity).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from echomotion.reid.metrics import rank1_and_map
from echomotion.section import SPLITS as ALL_SPLITS


def ridge(alpha: float) -> Pipeline:
    """Ridge regression on standardised inputs (scikit-learn; the intercept unpenalised)."""
    return Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=alpha))])


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`ridge` fitted to ``y`` (N,) on ``x`` (N, D); returns its predictor of new rows
    (M, D) -> (M,)."""
    return ridge(alpha).fit(x, y).predict


def r_squared(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination (scikit-learn's ``r2_score``), NaN where it is not
    defined: fewer than 2 targets, or constant targets."""
    y = np.asarray(y, float)
    if len(y) < 2 or np.ptp(y) == 0:
        return float("nan")
    return float(r2_score(y, pred))


def ef_probe(
    x: np.ndarray, ef: np.ndarray, split: np.ndarray, alphas: tuple[float, ...]
) -> dict[str, float]:
    """Ridge EF probe: the alpha with the best VAL R-squared (fit on TRAIN), refit on
    TRAIN + VAL, R-squared on TEST (scikit-learn's grid search over the predefined
    TRAIN/VAL split). Videos without EF are left out; with fewer than two VAL videos the
    median alpha is used. Fewer than two labelled TRAIN or TEST videos:
    ``{"skipped": reason}`` and the counts (no R-squared can be had)."""
    known = np.isfinite(ef)
    part = {s: known & (split == s) for s in ALL_SPLITS}
    counts = {f"n_{s.lower()}": int(part[s].sum()) for s in ALL_SPLITS}
    for s in ("TRAIN", "TEST"):
        if part[s].sum() < 2:
            n = int(part[s].sum())
            why = f"no EF labels in {s}" if n == 0 else f"only {n} {s} video with an EF label"
            return {"skipped": why, **counts}
    fit = part["TRAIN"] | part["VAL"]
    if part["VAL"].sum() < 2 or np.ptp(ef[part["VAL"]]) == 0:  # no VAL R-squared to choose by
        alpha, r2_val = sorted(alphas)[len(alphas) // 2], float("nan")
        model = ridge(alpha).fit(x[fit], ef[fit])
    else:
        folds = np.where(part["VAL"][fit], 0, -1)  # -1: always in the training fold
        search = GridSearchCV(
            ridge(alphas[0]), {"ridge__alpha": list(alphas)}, scoring="r2",
            cv=PredefinedSplit(folds), refit=True,
        ).fit(x[fit], ef[fit])  # fmt: skip
        alpha, r2_val = search.best_params_["ridge__alpha"], float(search.best_score_)
        model = search.best_estimator_
    return {
        "r2_test": r_squared(ef[part["TEST"]], model.predict(x[part["TEST"]])),
        "r2_val": r2_val,
        "alpha": float(alpha),
        **counts,
    }


def identity_retrieval(
    query: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray,
    mean: np.ndarray, std: np.ndarray,
) -> dict[str, float]:  # fmt: skip
    """Rank-1 / mAP (cosine of standardised vectors) with their chance levels."""
    return rank1_and_map((query - mean) / std, query_ids, (gallery - mean) / std, gallery_ids)
