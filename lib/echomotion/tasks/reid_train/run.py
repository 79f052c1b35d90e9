"""Stage ``reid_train``: the ReID encoder on every phase of every TRAIN video, with the
BNNeck (identity + triplet) or the Siamese (same/different pairs) method."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from echomotion.params import Params
from echomotion.reid.dataset import FrameIdentityDataset
from echomotion.reid.identities import identity_frames, write_identities
from echomotion.reid.losses import reid_loss, siamese_loss
from echomotion.reid.model import ReIDEncoder, ReIDModel, SiameseReIDEncoder
from echomotion.reid.pairs import PairBatchSampler
from echomotion.reid.params import ReIDModelParams
from echomotion.reid.sampler import PKBatchSampler
from echomotion.stage import finish_training
from echomotion.stores import videos as videos_store
from echomotion.stores.videos import frames_store
from echomotion.tasks.reid_train.params import ReIDTrainParams
from echomotion.training.data import BatchSamplerFactory
from echomotion.training.fingerprint import fresh_checkpoints
from echomotion.training.loop import LossFn, TrainResult, train_section

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ReIDTrainReport:
    """What :func:`train_reid` did; ``as_dict()`` is the stage's metrics."""

    result: TrainResult
    n_identities: int
    n_frames: int

    def as_dict(self) -> dict[str, Any]:
        last = self.result.last_row
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
    write_identities(out_dir, data)
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


OUT = "models/reid"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    fresh_checkpoints("reid_train", f"{OUT}/checkpoints")
    report = train_reid(
        frames_store(videos_store.PATH, params.shared.pseudo_label_frames),
        params.reid_train,
        out_dir=OUT,
        seed=params.reid_train.train.seed_or(params.shared.seed),
        log_file="plots/reid_train/train.tsv",
    )
    finish_training(
        params.reid_train, f"{OUT}/params_used.json", "metrics/reid_train.json", report.as_dict()
    )
