"""Torch datasets over the prepared video store.

The store is opened lazily in each DataLoader worker (Zarr handles are not shared
across processes) and, by default, its frames are made a numpy array once per
worker: a random window is then a numpy slice instead of a Zarr read, which is what
makes window reads far faster than per-video files (see benchmarks/store_reads.py).
Small stores are read into memory; large ones (EchoNet) are decompressed once per
machine and memory-mapped, so workers and ranks share one copy
(``RaggedStore.load``, benchmarks/store_memory.py). With ``in_memory=False`` whole
shards are read and cached instead.

Randomness is a pure function of (seed, epoch, index), so the same item gives the
same window in any worker, on any rank, after a resume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from echomotion.stores.ragged import RaggedStore


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W) -> float32 (..., 1, H, W) in [0, 1]."""
    return torch.from_numpy(np.array(frames, copy=True)).float().div_(255.0).unsqueeze(-3)


class _StoreDataset(Dataset):
    def __init__(self, store_path: str | Path, splits: tuple[str, ...], in_memory: bool, seed: int):
        self.store_path = Path(store_path)
        self.in_memory = in_memory
        self.seed = seed
        self.epoch = 0
        self._store: RaggedStore | None = None
        meta = RaggedStore(self.store_path)  # table only; frames stay on disk here
        self.table = meta.table
        self.lengths = meta.lengths()
        self.videos = np.flatnonzero(np.isin(self.table["split"].astype(str), splits))

    @property
    def store(self) -> RaggedStore:
        if self._store is None:
            self._store = RaggedStore(self.store_path)
            if self.in_memory:
                self._store.load("frames")
        return self._store

    def __getstate__(self):  # workers reopen the store themselves
        state = self.__dict__.copy()
        state["_store"] = None
        return state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __len__(self) -> int:
        return len(self.videos)


class VideoWindowDataset(_StoreDataset):
    """Random windows of ``length`` consecutive frames from videos of ``splits``.

    Videos shorter than ``length`` are left out. Item: ``frames`` (T, 1, H, W) float
    in [0, 1], ``video`` (store index), ``start`` and ``ef``.
    """

    def __init__(
        self,
        store_path: str | Path,
        length: int,
        splits: tuple[str, ...] = ("TRAIN",),
        seed: int = 0,
        in_memory: bool = True,
    ):
        super().__init__(store_path, splits, in_memory, seed)
        self.length = length
        self.videos = self.videos[self.lengths[self.videos] >= length]
        if len(self.videos) == 0:
            raise ValueError(f"{store_path}: no video of {splits} has {length} frames or more")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video = int(self.videos[index])
        start = int(self.rng(index).integers(0, self.lengths[video] - self.length + 1))
        frames = self.store.window(video, start, self.length)
        return {
            "frames": to_tensor(frames),  # (T, 1, H, W)
            "video": torch.tensor(video),
            "start": torch.tensor(start),
            "ef": torch.tensor(float(self.table["ef"][video])),
        }


def evenly_spaced(n: int, k: int | None) -> np.ndarray:
    """``k`` distinct, evenly spaced indices of ``range(n)``, first and last included
    (all ``n`` when ``k`` is None or at least ``n``)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)


def midway(ed: int, es: int) -> int:
    """The frame halfway between ED and ES (either may come first)."""
    return (ed + es) // 2


class TripletDataset(_StoreDataset):
    """The (ED, mid, ES) frames of each video with known ED/ES, as MAFE trains on them.

    Videos whose ED and ES are unknown or less than two frames apart are left out.
    Item: ``img0`` = ED, ``img1`` = ES, ``gt`` = the frame midway, each (1, H, W) in
    [0, 1], plus ``video`` and the three frame indices ``t0``, ``t1``, ``tm``.
    """

    def __init__(
        self,
        store_path: str | Path,
        splits: tuple[str, ...] = ("TRAIN",),
        seed: int = 0,
        in_memory: bool = True,
    ):
        super().__init__(store_path, splits, in_memory, seed)
        ed, es = self.table["ed"][self.videos], self.table["es"][self.videos]
        self.videos = self.videos[(ed >= 0) & (es >= 0) & (np.abs(ed - es) >= 2)]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video = int(self.videos[index])
        ed, es = int(self.table["ed"][video]), int(self.table["es"][video])
        mid = midway(ed, es)
        frames = self.store.video(video)[[ed, mid, es]]  # (3, H, W)
        img0, gt, img1 = to_tensor(frames)
        return {
            "img0": img0,
            "gt": gt,
            "img1": img1,
            "video": torch.tensor(video),
            "t0": torch.tensor(ed),
            "tm": torch.tensor(mid),
            "t1": torch.tensor(es),
        }
