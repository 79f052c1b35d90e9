"""Store ``data/features.zarr``: each triplet video's MAFE motion and appearance vector.

Written by stage ``features`` (:func:`write_features`, with the TRAIN statistics of the
motion vectors in its attributes); read by ``mcdm_train``, ``sample`` and ``evaluate``
through :func:`video_motion`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter

PATH = "data/features.zarr"  # where the pipeline keeps it (dvc.yaml)

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
