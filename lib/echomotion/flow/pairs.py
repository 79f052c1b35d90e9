"""Frame pairs of the prepared videos for unsupervised flow training.

``store_path`` is the resampled store or its source-rate store with exact ED/ES
(:func:`echomotion.stores.videos.frames_store`, ``shared.pseudo_label_frames``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from echomotion.data import _StoreDataset, midway, to_tensor
from echomotion.flow.segments import SegmentProvider
from echomotion.stores.ragged import RaggedStore
from echomotion.stores.videos import frame_size, video_frames


class FlowPairDataset(_StoreDataset):
    """One random frame pair per video of ``splits`` and epoch, with segment maps.

    With probability ``edes_fraction`` (videos with known ED/ES only) the pair is the
    video's mid->ED or mid->ES pair, the pairs the export scores (``edes_pair="mid"``), or
    its ED->ES pair (``"ed_es"``, UnSAMFlow's pair); otherwise it is
    (t, t + gap) with gap uniform in [1, ``max_gap``]. Either way the order is reversed
    with probability 1/2, and both frames share one random ``crop`` (None: whole frames).
    All choices are a pure function of (seed, epoch, index). ``in_memory``: see
    :mod:`echomotion.data`.

    Item: ``img1``, ``img2`` (1, h, w) float in [0, 1], ``video`` (store index), ``t1``,
    ``t2`` (their frame indices in the video); with a segment provider
    ``segments1``, ``segments2`` (h, w) int64 (0 = ignore), cached per frame.
    """

    def __init__(
        self,
        store_path: str | Path,
        splits: tuple[str, ...] = ("TRAIN",),
        max_gap: int = 4,
        edes_fraction: float = 0.25,
        edes_pair: str = "mid",
        crop: int | None = None,
        segments: SegmentProvider | None = None,
        seed: int = 0,
        in_memory: bool = True,
    ):
        super().__init__(store_path, splits, in_memory, seed)
        self.size = frame_size(RaggedStore(store_path))  # (H, W)
        self.videos = self.videos[self.lengths[self.videos] >= 2]
        if len(self.videos) == 0:
            raise ValueError(f"{store_path}: no video of {splits} with 2 frames or more")
        if edes_pair not in ("mid", "ed_es"):
            raise ValueError(f"edes_pair must be 'mid' or 'ed_es', got {edes_pair!r}")
        self.max_gap, self.edes_fraction, self.crop = max_gap, edes_fraction, crop
        self.edes_pair = edes_pair
        self.segments = segments
        self._segment_cache: dict[int, np.ndarray] = {}

    def pair(self, video: int, rng: np.random.Generator) -> tuple[int, int]:
        """Frame indices (a, b) within ``video`` of one random pair."""
        ed, es = int(self.table["ed"][video]), int(self.table["es"][video])
        if ed >= 0 and es >= 0 and abs(ed - es) >= 2 and rng.random() < self.edes_fraction:
            if self.edes_pair == "ed_es":
                a, b = ed, es
            else:
                a, b = midway(ed, es), (ed, es)[rng.integers(2)]
        else:
            n = int(self.lengths[video])
            gap = int(rng.integers(1, min(self.max_gap, n - 1) + 1))
            a = int(rng.integers(0, n - gap))
            b = a + gap
        return (a, b) if rng.random() < 0.5 else (b, a)

    def window(self, rng: np.random.Generator) -> tuple[slice, slice]:
        """Rows and columns of the random crop (everything without ``crop``)."""
        h, w = self.size
        if self.crop is None or self.crop >= min(h, w):
            return slice(None), slice(None)
        y, x = (int(rng.integers(0, s - self.crop + 1)) for s in (h, w))
        return slice(y, y + self.crop), slice(x, x + self.crop)

    def segment_map(self, row: int) -> np.ndarray:
        """Segment labels (H, W) of global frame ``row``, computed once."""
        if row not in self._segment_cache:
            frame = video_frames(self.store, row, row + 1)
            self._segment_cache[row] = self.segments(frame)[0].astype(np.int16)
        return self._segment_cache[row]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video = int(self.videos[index])
        rng = self.rng(index)
        t1, t2 = self.pair(video, rng)
        rows = [int(self.store.offsets[video]) + t for t in (t1, t2)]
        crop = self.window(rng)
        frames = np.stack([video_frames(self.store, r, r + 1)[0][crop] for r in rows])
        img1, img2 = to_tensor(frames)  # each (1, h, w)
        ids = {"video": video, "t1": t1, "t2": t2}
        item = {"img1": img1, "img2": img2} | {k: torch.tensor(v) for k, v in ids.items()}
        if self.segments is not None:
            for key, row in zip(("segments1", "segments2"), rows, strict=True):
                item[key] = torch.from_numpy(self.segment_map(row)[crop].astype(np.int64))
        return item
