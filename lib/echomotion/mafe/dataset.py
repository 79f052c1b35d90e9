"""MAFE's training data: ED/mid/ES triplets joined with their pseudo labels by video.

An item holds ``img0`` = ED, ``img1`` = ES, ``gt`` = the frame midway (each (1, H, W) in
[0, 1]), ``flow`` (4, H, W) the pseudo flow mid->ED then mid->ES in pixels, ``reid``
(2, D) the ReID embeddings of ED and ES, ``timestep`` the position of ``gt`` between
the two frames, and ``video``, ``t0``, ``tm``, ``t1`` (store index and frame indices
before augmentation).

Extra triplets (``extra_triplets > 0``): after the paper's ED/ES items come that many
random triplets ``(t0, t0 + g, t0 + 2g)`` per video, ``g`` drawn from ``extra_half_gap``.
The pseudo-label stores hold only the ED/ES pair, so their flow comes from OpenCV DIS
(mid->t0, mid->t1) and their ReID rows are the video's ED/ES embeddings (the label is the
video's identity, which any of its frames shares).

``videos_path`` is the resampled store or its source-rate store with exact ED/ES
(:func:`echomotion.stores.videos.frames_store`); the pseudo labels must come from the same one.

Randomness (extra triplets and ``augment_batch``) is a pure function of
(seed, epoch, index), so an item is the same in any worker and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from echomotion.data import TripletDataset, midway, to_tensor
from echomotion.flow.classical import DISFlow
from echomotion.mafe.augment import augment_batch
from echomotion.mafe.params import MAFEAugmentParams
from echomotion.stores.pseudo_flow import read_flows
from echomotion.stores.pseudo_reid import read_embeddings
from echomotion.stores.ragged import RaggedStore
from echomotion.stores.videos import frame_size

AUGMENTED_KEYS = ("img0", "img1", "gt", "flow", "reid", "timestep")


@dataclass(frozen=True)
class PseudoLabels:
    """The pseudo flow and ReID stores in memory, indexed by videos.zarr index."""

    flow: np.ndarray  # (n, 4, H, W) float16: mid->ED dx, dy, mid->ES dx, dy
    reid: np.ndarray  # (n, 2, D) float32: ED and ES embeddings
    rows: dict[int, int]  # video index in videos.zarr -> row of both arrays
    times: np.ndarray  # (n, 3) int: the ED, mid and ES frames the labels belong to


def _single_rows(store: RaggedStore, path: str | Path) -> np.ndarray:
    """The store's ``video`` column; every entry must be one row long."""
    if not np.all(store.lengths() == 1):
        raise ValueError(f"{path}: every video must have exactly one row")
    return store.table["video"].astype(np.int64)


def read_pseudo_labels(flow_path: str | Path, reid_path: str | Path) -> PseudoLabels:
    """Load the pseudo flow and ReID stores; both must list the same videos in one order."""
    flow_store, reid_store = RaggedStore(flow_path), RaggedStore(reid_path)
    flow_videos = _single_rows(flow_store, flow_path)
    reid_videos = _single_rows(reid_store, reid_path)
    if not np.array_equal(flow_videos, reid_videos):
        raise ValueError(f"{flow_path} and {reid_path} list different videos")
    flow, reid = read_flows(flow_store), read_embeddings(reid_store)
    if flow.ndim != 4 or flow.shape[1] != 4 or reid.ndim != 3 or reid.shape[1] != 2:
        raise ValueError(
            f"flow must be (n, 4, H, W), reid (n, 2, D); got {flow.shape}, {reid.shape}"
        )
    times = np.stack([flow_store.table[k] for k in ("ed", "mid", "es")], axis=1)  # (n, 3)
    return PseudoLabels(flow, reid, {int(v): i for i, v in enumerate(flow_videos)}, times)


def augment_item(item: dict, generator: torch.Generator, params: MAFEAugmentParams) -> dict:
    """:func:`augment_batch` on one item (frames, flow, ReID rows and timestep together)."""
    batch = {k: item[k][None] for k in AUGMENTED_KEYS}  # batch of one
    out = augment_batch(batch, generator, params)
    return {**item, **{k: out[k][0] for k in AUGMENTED_KEYS}}


class PseudoLabelTriplets(Dataset):
    """MAFE items of the triplet videos of ``splits`` (see the module docstring).

    ``augment`` None: no augmentation (evaluation).
    """

    def __init__(
        self,
        videos_path: str | Path,
        flow_path: str | Path,
        reid_path: str | Path,
        splits: tuple[str, ...] = ("TRAIN",),
        seed: int = 0,
        augment: MAFEAugmentParams | None = None,
        extra_triplets: int = 0,
        extra_half_gap: tuple[int, int] = (2, 5),
    ) -> None:
        self.triplets = TripletDataset(videos_path, splits, seed)
        self.labels = read_pseudo_labels(flow_path, reid_path)
        self.seed, self.epoch = seed, 0
        self.augment, self.extra, self.half_gap = augment, extra_triplets, extra_half_gap
        self._dis: DISFlow | None = None
        self._check(videos_path, flow_path)

    def _check(self, videos_path: str | Path, flow_path: str | Path) -> None:
        missing = [int(v) for v in self.triplets.videos if int(v) not in self.labels.rows]
        if missing:
            raise ValueError(f"{flow_path}: no pseudo labels for videos {missing} of {videos_path}")
        for video in self.triplets.videos:
            label_times = tuple(self.labels.times[self.labels.rows[int(video)]])
            if label_times != self.paper_times(int(video)):
                raise ValueError(
                    f"{flow_path}: video {video} labels frames {label_times}, "
                    f"{videos_path} has (ED, mid, ES) = {self.paper_times(int(video))}"
                )
        frame = frame_size(self.triplets.store)
        if tuple(self.labels.flow.shape[2:]) != tuple(frame):
            raise ValueError(f"pseudo flow is {self.labels.flow.shape[2:]}, frames are {frame}")

    @property
    def n_videos(self) -> int:
        return len(self.triplets.videos)

    @property
    def reid_dim(self) -> int:
        return int(self.labels.reid.shape[-1])

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop; the random draws depend on it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_videos * (1 + self.extra)

    def __getstate__(self) -> dict:  # OpenCV objects do not pickle; workers make their own
        return {**self.__dict__, "_dis": None}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if index < self.n_videos:
            item = self.paper_item(index)
        else:
            item = self.extra_item((index - self.n_videos) % self.n_videos, rng)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            item = augment_item(item, generator, self.augment)
        return item

    def _item(self, video: int, frames: np.ndarray, times: tuple[int, int, int], flow) -> dict:
        """Assemble an item from frames (3, H, W) uint8 ordered (t0, tm, t1) and flow (4, H, W)."""
        t0, tm, t1 = times
        img0, gt, img1 = to_tensor(frames)  # each (1, H, W)
        return {
            "img0": img0,
            "img1": img1,
            "gt": gt,
            "flow": torch.from_numpy(np.asarray(flow, dtype=np.float32)),
            "reid": torch.from_numpy(self.labels.reid[self.labels.rows[video]].copy()),
            "timestep": torch.tensor((tm - t0) / (t1 - t0), dtype=torch.float32),
            "video": torch.tensor(video),
            "t0": torch.tensor(t0),
            "tm": torch.tensor(tm),
            "t1": torch.tensor(t1),
        }

    def paper_times(self, video: int) -> tuple[int, int, int]:
        """(ED, mid, ES) frame indices of a video of the store."""
        ed, es = (int(self.triplets.table[k][video]) for k in ("ed", "es"))
        return ed, midway(ed, es), es

    def paper_item(self, i: int) -> dict[str, Tensor]:
        """The ED/mid/ES triplet of the ``i``-th video and its stored pseudo labels."""
        video = int(self.triplets.videos[i])
        times = self.paper_times(video)
        frames = self.triplets.store.video(video)[list(times)]  # (3, H, W)
        return self._item(video, frames, times, self.labels.flow[self.labels.rows[video]])

    def extra_item(self, i: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """A random (t0, t0 + g, t0 + 2g) triplet of the ``i``-th video, with DIS flow."""
        video = int(self.triplets.videos[i])
        frames = self.triplets.store.video(video)  # (T, H, W)
        g = int(rng.integers(self.half_gap[0], self.half_gap[1] + 1))
        g = max(1, min(g, (len(frames) - 1) // 2))
        t0 = int(rng.integers(0, len(frames) - 2 * g))
        times = (t0, t0 + g, t0 + 2 * g)
        if self._dis is None:
            self._dis = DISFlow("medium")
        mid = frames[[times[1], times[1]]]
        flow = self._dis(mid, frames[[times[0], times[2]]])  # (2, 2, H, W): mid->t0, mid->t1
        return self._item(video, frames[list(times)], times, flow.reshape(4, *flow.shape[2:]))
