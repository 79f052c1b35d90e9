"""Store ``data/pseudo/reid.zarr``: the pseudo appearance labels of every triplet video.

Written by stage ``reid_export`` (:func:`write_reid_store`: the ReID embeddings of each
video's ED and ES frames); read by ``mafe_train`` as the L_reid target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter

PATH = "data/pseudo/reid.zarr"  # where the pipeline keeps it (dvc.yaml)

REID_SCHEMA = {
    "embedding": "(1, 2, D) float32 per video: L2-normalised ReID embeddings of the ED "
    "(row 0) and ES (row 1) frames (echomotion.reid.ReIDEncoder.embed).",
    "offsets": "(n_videos + 1,) int64: video i is row i (one entry per video).",
    "videos": "per-video table, the triplet videos of videos.zarr in store order: "
    "file_name, video (index in videos.zarr), split, ed, es (frame indices).",
}


def write_reid_store(out_path: str | Path, rows: list[dict[str, Any]], emb: np.ndarray) -> None:
    """Write ``data/pseudo/reid.zarr``: one entry (length 1) per triplet video."""
    dim = emb.shape[-1]
    attrs = {"embedding_dim": dim, "schema": REID_SCHEMA}
    with RaggedStoreWriter(
        out_path,
        {"embedding": ((2, dim), "float32")},
        shard_frames=1024,
        chunk_frames=64,
        attrs=attrs,
    ) as writer:
        for row, e in zip(rows, emb, strict=True):
            writer.append({"embedding": e[None]}, **row)  # (1, 2, D)


def read_embeddings(store: RaggedStore) -> np.ndarray:
    """Every video's ED and ES embeddings, (n_videos, 2, D) float32 (:data:`REID_SCHEMA`)."""
    return store.array("embedding")[:].astype(np.float32)
