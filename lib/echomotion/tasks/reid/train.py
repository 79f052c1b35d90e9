"""Stage ``reid_train``: the ReID encoder on every phase of every TRAIN video, with the
BNNeck (identity + triplet) or the Siamese (same/different pairs) method."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echomotion.data import evenly_spaced
from echomotion.device import process_state
from echomotion.reid.dataset import FrameIdentityDataset
from echomotion.reid.losses import reid_loss, siamese_loss
from echomotion.reid.model import ReIDEncoder, ReIDModel, SiameseReIDEncoder
from echomotion.reid.pairs import PairBatchSampler
from echomotion.reid.sampler import PKBatchSampler
from echomotion.store import RaggedStore
from echomotion.training.data import BatchSamplerFactory
from echomotion.training.loop import LossFn, TrainResult, train_section

from .params import ReIDModelParams, ReIDTrainParams

logger = logging.getLogger(__name__)

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


def build_encoder(
    params: ReIDModelParams, num_identities: int, seed: int, method: str = "bnneck"
) -> ReIDModel:
    """A freshly initialised encoder of ``method`` (bnneck: :class:`ReIDEncoder`, siamese:
    :class:`SiameseReIDEncoder`); the same ``seed`` gives the same initial weights."""
    classes = {"bnneck": ReIDEncoder, "siamese": SiameseReIDEncoder}
    if method not in classes:
        raise ValueError(f"unknown ReID method {method!r}; expected one of {sorted(classes)}")
    torch.manual_seed(seed)
    return classes[method](**params.model_dump(), num_identities=num_identities)


def pk_sampler_factory(instances: int) -> BatchSamplerFactory:
    """Batch sampler factory for :func:`echomotion.training.train`: P x K batches with
    ``K = instances`` and ``P = batch_size / K``, over ``dataset.identities``."""

    def factory(dataset, batch_size: int, seed: int, rank: int, world_size: int):
        return PKBatchSampler(
            dataset.identities,
            p=batch_size // instances,
            k=instances,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )

    return factory


def pair_sampler_factory(positive_fraction: float) -> BatchSamplerFactory:
    """Batch sampler factory for :func:`echomotion.training.train`: ``batch_size`` frame
    pairs per batch (``2 * batch_size`` frames), ``positive_fraction`` of them same-video,
    over ``dataset.identities``."""

    def factory(dataset, batch_size: int, seed: int, rank: int, world_size: int):
        return PairBatchSampler(
            dataset.identities,
            pairs=batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            positive_fraction=positive_fraction,
        )

    return factory


def objective(params: ReIDTrainParams) -> tuple[LossFn, BatchSamplerFactory]:
    """The loss and the batch sampler factory of ``params.method``."""
    if params.method == "siamese":
        return siamese_loss, pair_sampler_factory(params.pairs.positive_fraction)
    return partial(reid_loss, params=params.loss), pk_sampler_factory(params.instances)


def read_identities(model_root: str | Path) -> list[str]:
    """The training videos' file names, in class order, written by :func:`train_reid`."""
    return json.loads((Path(model_root) / IDENTITIES_FILE).read_text())["file_names"]


def _write_identities(model_root: Path, data: IdentityFrames) -> None:
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


@dataclass(frozen=True)
class ReIDTrainReport:
    """What :func:`train_reid` did; ``as_dict()`` is the stage's metrics."""

    result: TrainResult
    n_identities: int
    n_frames: int

    def as_dict(self) -> dict[str, Any]:
        last = self.result.history[-1] if self.result.history else {}
        return {
            "steps": self.result.step,
            "resumed_from": self.result.resumed_from,
            "n_identities": self.n_identities,
            "n_frames": self.n_frames,
            "final": {k: v for k, v in last.items() if k != "step"},
        }


def train_reid(
    videos_path: str | Path,
    params: ReIDTrainParams,
    *,
    out_dir: str | Path,
    seed: int,
    log_file: str | Path | None = None,
) -> ReIDTrainReport:
    """Train the ReID encoder on TRAIN videos (identity = video) with the shared loop.

    Writes ``out_dir/model`` (the encoder), ``out_dir/checkpoints`` (resumed when
    present) and ``out_dir/identities.json`` (class index -> file name).
    """
    began, out_dir = time.perf_counter(), Path(out_dir)
    # 1. Data: every kept frame of a TRAIN video is labelled with its video.
    data = identity_frames(videos_path, ("TRAIN",), params.frames_per_video)
    dataset = FrameIdentityDataset(
        data.frames, data.identities, augment=True, **params.augment.model_dump()
    )
    logger.info("%d TRAIN identities, %d frames", len(data.videos), len(dataset))
    _write_identities(out_dir, data)
    # 2. Model and the shared loop with P x K batches (bnneck) or pair batches (siamese).
    model = build_encoder(params.model, len(data.videos), seed, params.method)
    loss_fn, sampler_factory = objective(params)
    result = train_section(
        model,
        dataset,
        loss_fn,
        params,
        out_dir=out_dir,
        seed=seed,
        log_file=log_file,
        batch_sampler_factory=sampler_factory,
        name="reid_train",
    )
    logger.info("reid_train: %d steps in %.1f s", result.step, time.perf_counter() - began)
    return ReIDTrainReport(result, len(data.videos), len(dataset))
