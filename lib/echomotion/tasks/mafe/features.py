"""Stage ``features``: per-video motion and appearance vectors, and what they encode.

Every triplet video's ED/ES pair goes through the trained MAFE once; the pooled motion
and appearance features (:meth:`MAFE.motion_vector`, :meth:`MAFE.appearance_vector`, here
from one shared backbone pass) are stored in ``features.zarr`` with the TRAIN mean and
standard deviation of the motion vectors (the diffusion model conditions on the
standardised vector).

The method's claim, measured: motion vectors should carry the heart's function and
appearance vectors its identity. ``ef_probe``: closed-form ridge regression of EF on the
standardised vectors (alpha chosen on VAL, refit on TRAIN + VAL), R-squared on TEST.
``identity_retrieval``: the ED/ES vector of each video is a query; the gallery holds the
vectors of shifted pairs (ED + k, ES + k) of every video; rank-1 (cosine, standardised
vectors) against its chance level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from echomotion.data import TripletDataset, to_tensor
from echomotion.mafe.model import MAFE
from echomotion.reid.metrics import rank1_and_map
from echomotion.store import RaggedStore, RaggedStoreWriter

from .params import FeaturesParams
from .train import load_mafe

logger = logging.getLogger(__name__)

ALL_SPLITS = ("TRAIN", "VAL", "TEST")
STD_FLOOR = 1e-6  # motion_std is at least this, so (motion - mean) / std stays finite
FEATURES_SCHEMA = {
    "motion": "(1, Dm) float32 per video: MAFE motion vector of the ED/ES pair "
    "(MAFE.motion_vector), raw.",
    "appearance": "(1, Da) float32 per video: MAFE appearance vector of the ED/ES pair "
    "(MAFE.appearance_vector), raw.",
    "offsets": "(n_videos + 1,) int64: video i is row i (one entry per video).",
    "videos": "per-video table, the triplet videos of videos.zarr in store order: "
    "file_name, video (index in videos.zarr), split, ef (NaN when unknown).",
    "attrs": "motion_dim, appearance_dim, motion_mean and motion_std (lists of Dm floats, "
    f"over TRAIN videos, std floored at {STD_FLOOR}).",
}

Pair = tuple[int, int, int]  # (video index in videos.zarr, frame a, frame b)


def pair_vectors(model: MAFE, img0: Tensor, img1: Tensor) -> tuple[Tensor, Tensor]:
    """(motion (B, Dm), appearance (B, Da)) of frame pairs (B, 1, H, W), one backbone pass
    (:meth:`MAFE.vectors`): the values of ``model.motion_vector`` and, without flip TTA,
    of ``model.appearance_vector`` (with it, equal up to float rounding)."""
    return model.vectors(img0, img1)


@torch.no_grad()
def compute_vectors(
    model: MAFE, store: RaggedStore, pairs: list[Pair], batch_size: int, desc: str = "features"
) -> tuple[np.ndarray, np.ndarray]:
    """Motion (N, Dm) and appearance (N, Da) float32 vectors of frame pairs of the store,
    computed on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    motion, appearance = [], []
    for start in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch"):
        chunk = pairs[start : start + batch_size]
        frames = np.stack([store.video(v)[[a, b]] for v, a, b in chunk])  # (B, 2, H, W)
        x = to_tensor(frames).to(device)  # (B, 2, 1, H, W)
        m, a = pair_vectors(model, x[:, 0], x[:, 1])
        motion.append(m.float().cpu().numpy())
        appearance.append(a.float().cpu().numpy())
    return np.concatenate(motion), np.concatenate(appearance)


def ed_es_pairs(dataset: TripletDataset) -> list[Pair]:
    """The (video, ED, ES) pair of every video of a triplet dataset, in store order."""
    table = dataset.table
    return [(int(v), int(table["ed"][v]), int(table["es"][v])) for v in dataset.videos]


def shifted_pairs(pairs: list[Pair], lengths: np.ndarray, shifts: tuple[int, ...]) -> list[Pair]:
    """(video, a + k, b + k) for each pair and shift k, each index clipped to its video."""
    out = []
    for video, a, b in pairs:
        last = int(lengths[video]) - 1
        out += [(video, min(max(a + k, 0), last), min(max(b + k, 0), last)) for k in shifts]
    return out


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


def train_stats(x: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and floored standard deviation (float32) over the TRAIN rows of ``x``."""
    rows = x[split == "TRAIN"]
    if len(rows) == 0:
        raise ValueError("no TRAIN video to compute the feature statistics from")
    return rows.mean(0).astype(np.float32), np.maximum(rows.std(0), STD_FLOOR).astype(np.float32)


def video_motion(features: RaggedStore) -> np.ndarray:
    """The motion vector of every video of a features store (a RaggedStore with one
    entry per video), as ``(n_videos, D)``."""
    n = int(features.offsets[-1])
    flat = features.frames("motion", 0, n).reshape(n, -1)  # (entries, D)
    return flat[features.offsets[:-1]]


def write_features(
    path: str | Path, table: dict, videos: np.ndarray, motion: np.ndarray, appearance: np.ndarray
) -> None:
    """Write ``features.zarr`` (schema: :data:`FEATURES_SCHEMA`)."""
    split = table["split"][videos].astype(str)
    mean, std = train_stats(motion, split)
    attrs = {
        "motion_dim": int(motion.shape[1]),
        "appearance_dim": int(appearance.shape[1]),
        "motion_mean": mean.tolist(),
        "motion_std": std.tolist(),
        "schema": FEATURES_SCHEMA,
    }
    arrays = {
        "motion": ((motion.shape[1],), "float32"),
        "appearance": ((appearance.shape[1],), "float32"),
    }
    with RaggedStoreWriter(path, arrays, attrs=attrs) as writer:
        for i, video in enumerate(videos):
            writer.append(
                {"motion": motion[i : i + 1], "appearance": appearance[i : i + 1]},
                file_name=str(table["file_name"][video]),
                video=int(video),
                split=str(split[i]),
                ef=float(table["ef"][video]),
            )


def export_features(
    videos_path: str | Path,
    model_dir: str | Path,
    out_path: str | Path,
    params: FeaturesParams,
    device: str | torch.device = "cpu",
) -> dict:
    """Write the vectors of every triplet video to ``out_path`` and return the metrics;
    MAFE runs on ``device``."""
    # 1. the triplet videos and the trained model
    dataset = TripletDataset(videos_path, splits=ALL_SPLITS)
    store, table, videos = dataset.store, dataset.table, dataset.videos
    model = load_mafe(model_dir).to(device)
    # 2. ED/ES vectors -> the store
    pairs = ed_es_pairs(dataset)
    motion, appearance = compute_vectors(model, store, pairs, params.batch_size)
    write_features(out_path, table, videos, motion, appearance)
    # 3. what the vectors encode: EF (ridge) and identity (retrieval of shifted pairs)
    shifted = shifted_pairs(pairs, dataset.lengths, params.retrieval_shifts)
    g_motion, g_appearance = compute_vectors(model, store, shifted, params.batch_size, "gallery")
    split, ef = table["split"][videos].astype(str), table["ef"][videos].astype(np.float64)
    ids, gallery_ids = videos, np.repeat(videos, len(params.retrieval_shifts))
    metrics: dict = {
        "n_videos": len(videos),
        "motion_dim": motion.shape[1],
        "appearance_dim": appearance.shape[1],
    }
    for name, x, g in (("motion", motion, g_motion), ("appearance", appearance, g_appearance)):
        mean, std = train_stats(x, split)
        metrics[f"ef_probe_{name}"] = ef_probe(x.astype(np.float64), ef, split, params.ridge_alphas)
        metrics[f"retrieval_{name}"] = identity_retrieval(x, g, ids, gallery_ids, mean, std)
    logger.info("features: %s", metrics)
    return metrics
