"""Store ``data/pseudo/flow.zarr``: the pseudo flow labels of every triplet video.

Written by stage ``flow_export`` (one row per video: mid->ED and mid->ES flow); read by
``mafe_train`` as the L_flow target (:mod:`echomotion.mafe.dataset`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter

PATH = "data/pseudo/flow.zarr"  # where the pipeline keeps it (dvc.yaml)

FLOW_SCHEMA = {
    "flow": "(n_videos, 4, H, W) float16, pixels: [mid->ED dx, dy, mid->ES dx, dy], "
    "backward convention: warp(ED, flow[:2]) ~= mid, I_mid(x) ~= I_ED(x + flow(x)).",
    "offsets": "(n_videos + 1,) int64: entry i is row i (one row per video).",
    "videos": "per-entry table: file_name, video (index in videos.zarr), split, ed, mid, es "
    "(frame indices within the video).",
}


CHUNK_VIDEOS, SHARD_VIDEOS = 16, 256  # entries per compressed chunk / per shard file


def open_writer(path: str | Path, frame_size: tuple[int, int], attrs: dict) -> RaggedStoreWriter:
    """Writer of a pseudo-flow store of ``frame_size`` (H, W) flows, one row per video."""
    arrays = {"flow": ((4, *frame_size), "float16")}
    return RaggedStoreWriter(path, arrays, SHARD_VIDEOS, CHUNK_VIDEOS, attrs)


def read_flows(store: RaggedStore) -> np.ndarray:
    """Every video's flow, (n_videos, 4, H, W) float16 (:data:`FLOW_SCHEMA`)."""
    return store.array("flow")[:]
