"""Store ``data/prepared/videos.zarr``: every accepted video, decoded and resampled.

Written by stage ``prepare`` (:data:`STORE_SCHEMA`, :func:`open_writer`); with
``prepare.native_frames`` it also holds the nested store ``videos.zarr/native``
(:data:`NATIVE_SCHEMA`, :func:`open_native_writer`): the same videos at their source frame
rate. :func:`frames_store` picks the one a pseudo-label stage reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter

PATH = "data/prepared/videos.zarr"  # where the pipeline keeps it (dvc.yaml)

NATIVE = "native"  # the nested store of the prepared videos at their source frame rate


FRAME_CHOICES = ("resampled", "native")  # shared.pseudo_label_frames


def frames_store(videos_path: str | Path, frames: str = "resampled") -> Path:
    """The store a pseudo-label stage reads: ``videos_path`` itself (``resampled``) or its
    nested source-rate store ``videos_path/native`` (``native``), which lists the same
    videos in the same order, so a video index means the same video in both.

    Raises FileNotFoundError when ``native`` is asked for and prepare did not write it,
    ValueError when the two stores list different videos (a stale nested store).
    """
    if frames not in FRAME_CHOICES:
        raise ValueError(f"frames must be one of {FRAME_CHOICES}, got {frames!r}")
    videos_path = Path(videos_path)
    if frames == "resampled":
        return videos_path
    native = videos_path / NATIVE
    if not (native / "zarr.json").is_file():
        raise FileNotFoundError(
            f"{videos_path}: no source-rate frames ({NATIVE}/) for shared.pseudo_label_frames="
            "native; re-run prepare with prepare.native_frames: true, or set "
            "shared.pseudo_label_frames: resampled"
        )
    outer, inner = RaggedStore(videos_path).table, RaggedStore(native).table
    if not np.array_equal(outer["file_name"], inner["file_name"]):
        raise ValueError(f"{native} lists other videos than {videos_path}: re-run prepare")
    return native


STORE_SCHEMA = {
    "frames": "(N_total, size, size) uint8 grayscale, all videos concatenated in table order",
    "offsets": "(n_videos + 1,) int64; video i = frames[offsets[i]:offsets[i+1]]",
    "videos/file_name": "str, FileName without extension",
    "videos/split": "str, TRAIN / VAL / TEST",
    "videos/ef, esv, edv": "float64, NaN when the FileList has no value",
    "videos/fps": "float64, frame rate of the stored frames",
    "videos/source_fps": "float64, frame rate of the source video",
    "videos/n_frames": "int64, stored frames of the video",
    "videos/ed, es": "int64, ED / ES index into the stored frames, -1 when unknown",
    "videos/ed_es_source": "str, where ed/es come from: tracings, detector or none",
    "videos/ed_auto, es_auto": "int64, the label-free detector's ED / ES (-1: none found)",
    "videos/source_row": "int64, line of the video in FileList.csv",
}


NATIVE_SCHEMA = {
    **STORE_SCHEMA,
    "frames": "(N_total, size, size) uint8 grayscale: every decoded frame of every video at "
    "its source rate, in the order of the outer store (video i is the same video in both)",
    "videos/fps": "float64, the source frame rate (the rate of these frames)",
    "videos/n_frames": "int64, decoded frames of the source video",
    "videos/ed, es": "int64, ED / ES source frame index: the traced frame itself, else the "
    "source frame of the detector's ED / ES; -1 when unknown",
    "videos/ed_es_source": "str, where ed/es come from: tracings, detector or none",
    "videos/ed_auto, es_auto": "int64, source frame of the detector's ED / ES (-1: none)",
}


def frame_size(store: RaggedStore) -> tuple[int, int]:
    """(H, W) of the frames of a videos store (resampled or native)."""
    return tuple(store.array("frames").shape[1:])


def video_frames(store: RaggedStore, start: int, stop: int) -> np.ndarray:
    """Frames ``start:stop`` (uint8, (n, H, W)) of the concatenated frames of a videos store."""
    return store.frames("frames", start, stop)


def open_writer(
    path: str | Path, size: int, shard_frames: int, chunk_frames: int, source_root: str | Path
) -> RaggedStoreWriter:
    """Writer of a videos store of ``size`` x ``size`` frames (:data:`STORE_SCHEMA`)."""
    return RaggedStoreWriter(
        path, {"frames": ((size, size), "uint8")}, shard_frames, chunk_frames,
        attrs={"description": STORE_SCHEMA, "source_root": str(source_root)},
    )  # fmt: skip


def open_native_writer(
    outer: RaggedStoreWriter, shard_frames: int, chunk_frames: int, source_root: str | Path
) -> RaggedStoreWriter:
    """Writer of the nested source-rate store inside the store ``outer`` is writing (so
    both appear together when ``outer`` completes; :data:`NATIVE_SCHEMA`)."""
    return RaggedStoreWriter(
        outer.tmp / NATIVE, outer.frame_arrays, shard_frames, chunk_frames,
        attrs={"description": NATIVE_SCHEMA, "source_root": str(source_root)},
    )  # fmt: skip
