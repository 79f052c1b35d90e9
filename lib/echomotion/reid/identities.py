"""The identities of ReID training: which TRAIN video each class is, and its frames.

:func:`identity_frames` samples each training video's frames over the whole cycle (one
identity per video); :func:`write_identities` saves the class -> video map beside the
model (``identities.json``) so ``reid_export`` can keep training videos out of its
held-out retrieval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echomotion.data import evenly_spaced
from echomotion.device import process_state
from echomotion.stores.ragged import RaggedStore

IDENTITIES_FILE = "identities.json"  # beside model/: class index -> training video


@dataclass(frozen=True)
class IdentityFrames:
    """Frames of some videos, labelled by video (identity ``i`` = ``videos[i]``)."""

    frames: np.ndarray  # (N, H, W) uint8
    identities: np.ndarray  # (N,) int64 in [0, V)
    videos: np.ndarray  # (V,) int64: index of each identity's video in the store
    file_names: list[str]  # (V,)


def identity_frames(
    videos_path: str | Path, splits: tuple[str, ...], frames_per_video: int | None
) -> IdentityFrames:
    """Evenly spaced frames of every video of ``splits`` in the store, in store order."""
    store = RaggedStore(videos_path)
    videos = np.flatnonzero(np.isin(store.table["split"].astype(str), splits))
    if len(videos) < 2:
        raise ValueError(f"{videos_path}: {len(videos)} videos in {splits}, need at least 2")
    chunks, labels = [], []
    for identity, video in enumerate(videos):
        frames = store.video(int(video))  # (T, H, W)
        keep = evenly_spaced(len(frames), frames_per_video)
        chunks.append(frames[keep])
        labels.append(np.full(len(keep), identity, dtype=np.int64))
    names = [str(store.table["file_name"][v]) for v in videos]
    return IdentityFrames(np.concatenate(chunks), np.concatenate(labels), videos, names)


def read_identities(model_root: str | Path) -> list[str]:
    """The training videos' file names, in class order, written by stage ``reid_train``
    (:func:`write_identities`)."""
    return json.loads((Path(model_root) / IDENTITIES_FILE).read_text())["file_names"]


def write_identities(model_root: Path, data: IdentityFrames) -> None:
    """Rank 0 writes the class -> video table; the other ranks wait for it."""
    state = process_state()
    if state.is_main_process:
        _write_identity_file(model_root, data)
    state.wait_for_everyone()


def _write_identity_file(model_root: Path, data: IdentityFrames) -> None:
    model_root.mkdir(parents=True, exist_ok=True)
    content = {"file_names": data.file_names, "videos": data.videos.tolist()}
    tmp = model_root / f".{IDENTITIES_FILE}.tmp"
    tmp.write_text(json.dumps(content, indent=1) + "\n")
    tmp.replace(model_root / IDENTITIES_FILE)
