"""Store ``data/latents.zarr``: every prepared frame through the VAE encoder.

Written by stage ``latents`` (:data:`LATENTS_SCHEMA`, frames aligned 1:1 with
``videos.zarr``); read by ``mcdm_train`` (random windows of latent frames).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter

PATH = "data/latents.zarr"  # where the pipeline keeps it (dvc.yaml)

LATENTS_SCHEMA = {
    "latents": "(N_total, C, H/8, W/8) float16: VAE posterior mode times scaling_factor, "
    "aligned 1:1 with videos.zarr's frames (same videos, order and lengths).",
    "offsets": "(n_videos + 1,) int64: video i = latents[offsets[i]:offsets[i+1]].",
    "videos": "per-video table: file_name, video (index in videos.zarr), split, fps.",
    "attrs": "scaling_factor (already applied), frame_size [H, W], schema.",
}


def open_writer(
    path: str | Path, shape: tuple[int, int, int], frame_size: tuple[int, int],
    scaling_factor: float, shard_frames: int, chunk_frames: int,
) -> RaggedStoreWriter:  # fmt: skip
    """Writer of a latents store of ``shape`` (C, h, w) latents of ``frame_size`` frames."""
    attrs = {
        "scaling_factor": scaling_factor,
        "frame_size": [int(n) for n in frame_size],
        "schema": LATENTS_SCHEMA,
    }
    return RaggedStoreWriter(
        path, {"latents": (shape, "float16")}, shard_frames=shard_frames,
        chunk_frames=chunk_frames, attrs=attrs,
    )  # fmt: skip


def all_latents(store: RaggedStore) -> np.ndarray:
    """Every latent frame of a latents store, (N_total, C, h, w) float16."""
    return store.frames("latents", 0, int(store.offsets[-1]))
