"""The Frechet distance between two feature sets, each summarised by a Gaussian.

``d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})`` (Dowson & Landau 1982), the
distance behind FID (frame features) and FVD (clip features). Which features is the
extractor's business (:mod:`echomotion.evaluation.extractors`); this module only compares.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import linalg

log = logging.getLogger(__name__)


def gaussian_stats(features: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of ``features`` (N, D), in float64: unbiased
    (``ddof=1``), or divided by N (``ddof=0``, StyleGAN-V's ``FeatureStats``)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N, D) features with N >= 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False, ddof=ddof).reshape(x.shape[1], x.shape[1])


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> np.ndarray:
    """(S1 S2)^{1/2}; when it is not finite (singular covariances from few samples),
    retried with ``eps`` added to both diagonals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            log.warning(
                "sqrtm of the covariance product is not finite: adding %g to diagonals", eps
            )
            offset = np.eye(len(sigma1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    return covmean


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    A complex square root whose imaginary part is round-off (|imag| <= 1e-3 on the diagonal)
    is replaced by its real part; a larger one raises ValueError. Round-off can make the
    result a hair below zero: it is clipped at 0.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != 2 * mu1.shape:
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}"
        )
    covmean = _sqrtm_product(sigma1, sigma2, eps)
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            raise ValueError(f"sqrtm has a large imaginary component ({imag:.3g})")
        covmean = covmean.real
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def frechet_distance(features1: np.ndarray, features2: np.ndarray, ddof: int = 1) -> float:
    """Squared Frechet distance between the Gaussians fitted to two (N, D) feature sets
    (covariance ``ddof``: see :func:`gaussian_stats`)."""
    return frechet_distance_from_stats(
        *gaussian_stats(features1, ddof), *gaussian_stats(features2, ddof)
    )
