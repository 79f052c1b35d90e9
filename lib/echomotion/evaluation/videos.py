"""Video sets the metrics draw from, and how frames and clips are drawn from them.

A :class:`VideoSet` is a list of grayscale uint8 videos (T, H, W) of one frame size,
addressed by position: real videos are read from the prepared store on demand, synthetic
ones are decoded once into memory (their sets are small). Draws are seeded index lists
first (``(video, frame)`` or ``(video, start)`` pairs), then gathered reading each video
once, so a draw from a large store never loads the whole store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from echomotion.stores.ragged import RaggedStore
from echomotion.video import read_video


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) uint8 resized to ``size`` = (H, W) with area interpolation (no-op if equal)."""
    if frames.shape[1:] == tuple(size):
        return frames
    return np.stack([cv2.resize(f, size[::-1], interpolation=cv2.INTER_AREA) for f in frames])


@dataclass
class VideoSet:
    """Named videos of one frame size; ``read(i)`` gives video ``i`` as (T, H, W) uint8."""

    names: list[str]
    lengths: np.ndarray
    read: Callable[[int], np.ndarray]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_store(cls, store: RaggedStore, indices: Sequence[int]) -> VideoSet:
        """Videos ``indices`` of a prepared store (read lazily, shard by shard)."""
        indices = [int(i) for i in indices]
        names = [str(store.table["file_name"][i]) for i in indices]
        return cls(names, store.lengths()[indices], lambda k: store.video(indices[k]))

    @classmethod
    def from_arrays(cls, names: Sequence[str], videos: Sequence[np.ndarray]) -> VideoSet:
        """Videos already in memory."""
        videos = list(videos)
        return cls(list(names), np.array([len(v) for v in videos]), videos.__getitem__)

    @classmethod
    def from_files(cls, paths: Sequence[Path], size: tuple[int, int]) -> VideoSet:
        """Decode video files into memory, resized to ``size`` = (H, W)."""
        videos = [resize_frames(read_video(p).frames, size) for p in paths]
        return cls.from_arrays([Path(p).stem for p in paths], videos)

    def subset(self, keep: Sequence[int]) -> VideoSet:
        """The videos at positions ``keep``, in that order."""
        keep = [int(k) for k in keep]
        return VideoSet(
            [self.names[k] for k in keep], self.lengths[keep], lambda j: self.read(keep[j])
        )


def clip_frame_indices(n_frames: int, start: int, length: int) -> np.ndarray:
    """Frame indices of a ``length``-frame clip from ``start``; a video shorter than
    ``length`` is stretched over the clip (evenly spaced, repeated indices)."""
    if n_frames >= length:
        return np.arange(start, start + length)
    return np.linspace(0, n_frames - 1, length).round().astype(np.int64)


def draw_frames(videos: VideoSet, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """``min(n, total)`` distinct frames drawn uniformly from all frames (all when n is None),
    as (video, frame) rows (K, 2) sorted by video."""
    pairs = np.concatenate(
        [np.stack([np.full(t, v), np.arange(t)], 1) for v, t in enumerate(videos.lengths)]
    )  # (total, 2)
    if n is not None and n < len(pairs):
        pairs = pairs[np.sort(rng.choice(len(pairs), size=n, replace=False))]
    return pairs


def draw_clips(videos: VideoSet, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` clips as (video, start) rows (n, 2) sorted by video: a uniform video, then a
    uniform start (0 for videos shorter than ``length``)."""
    video = np.sort(rng.integers(0, len(videos), size=n))
    room = np.maximum(videos.lengths[video] - length + 1, 1)
    start = (rng.random(n) * room).astype(np.int64)
    return np.stack([video, start], 1)


def spaced_clips(videos: VideoSet, per_video: int, length: int) -> np.ndarray:
    """``per_video`` evenly spaced clips of every video as (video, start) rows."""
    rows = []
    for v, t in enumerate(videos.lengths):
        starts = np.linspace(0, max(int(t) - length, 0), per_video).round().astype(np.int64)
        rows += [(v, s) for s in starts]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def gather_frames(videos: VideoSet, pairs: np.ndarray) -> np.ndarray:
    """Frames (K, H, W) of (video, frame) rows, reading each video once."""
    out = [None] * len(pairs)
    for v in np.unique(pairs[:, 0]):
        rows = np.flatnonzero(pairs[:, 0] == v)
        frames = videos.read(int(v))
        for r in rows:
            out[r] = frames[pairs[r, 1]]
    return np.stack(out)


def gather_clips(videos: VideoSet, pairs: np.ndarray, length: int) -> np.ndarray:
    """Clips (K, length, H, W) of (video, start) rows, reading each video once."""
    out = [None] * len(pairs)
    for v in np.unique(pairs[:, 0]):
        frames = videos.read(int(v))
        for r in np.flatnonzero(pairs[:, 0] == v):
            out[r] = frames[clip_frame_indices(len(frames), int(pairs[r, 1]), length)]
    return np.stack(out)
