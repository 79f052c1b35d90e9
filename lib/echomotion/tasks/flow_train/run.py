"""Stage ``flow_train``: PWCLite trained without labels on frame pairs of the TRAIN videos."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from echomotion.flow.classical import NetworkFlow
from echomotion.flow.losses import attach_step_counter, make_flow_loss
from echomotion.flow.pairs import FlowPairDataset
from echomotion.flow.pwc import PWCLite
from echomotion.flow.segments import make_segment_provider
from echomotion.flow.truth import TruthPairs, load_truth_pairs, score_provider
from echomotion.params import Params
from echomotion.stage import finish_training
from echomotion.stores import phantom_truth as phantom_truth_store
from echomotion.stores import videos as videos_store
from echomotion.stores.videos import frames_store
from echomotion.tasks.flow_train.params import FlowTrainParams
from echomotion.training.fingerprint import fresh_checkpoints
from echomotion.training.loop import EvalFn, TrainResult, train_section

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowTrainReport:
    """What :func:`train_flow` did: the loop's result and the number of TRAIN videos."""

    result: TrainResult
    n_train_videos: int

    def as_dict(self) -> dict[str, float | int | None]:
        """Metrics of the stage: steps, last curve row, last eval row."""
        last, evals = self.result.last_row, self.result.last_eval
        return {
            "steps": self.result.step,
            "resumed_from": self.result.resumed_from,
            "n_train_videos": self.n_train_videos,
            **{f"final_{k}": v for k, v in last.items() if k not in ("step", "lr")},
            **{f"val_{k}": v for k, v in evals.items() if k != "step"},
        }


def make_eval_fn(pairs: TruthPairs) -> EvalFn:
    """``eval_fn(model, step)``: the network's mean EPE (all, sector, LV) on ``pairs``."""

    def eval_fn(model: torch.nn.Module, step: int) -> dict[str, float]:
        mean = score_provider(NetworkFlow(model, batch_size=len(pairs)), pairs)["mean"]
        return {f"epe_{region}": value for region, value in mean.items()}

    return eval_fn


def build_dataset(videos_path: str | Path, params: FlowTrainParams, seed: int) -> FlowPairDataset:
    """TRAIN pairs; segments only when the segment term of the loss is on at some step."""
    segments = make_segment_provider(params.segments) if params.needs_segments() else None
    return FlowPairDataset(
        videos_path,
        ("TRAIN",),
        max_gap=params.max_gap,
        edes_fraction=params.edes_fraction,
        edes_pair=params.edes_pair,
        crop=params.crop,
        segments=segments,
        seed=seed,
    )


def train_flow(
    videos_path: str | Path,
    truth_path: str | Path,
    params: FlowTrainParams,
    *,
    out_dir: str | Path,
    log_file: str | Path,
    seed: int,
) -> FlowTrainReport:
    """Train PWCLite on TRAIN frame pairs; score the VAL mid->ED/ES pairs at checkpoints.

    The eval runs only when ``truth_path`` (the phantom's truth store) holds VAL videos of
    ``videos_path``. Writes ``out_dir/model`` and checkpoints (resumed automatically).
    """
    # 1. data and the model, initialised from the seed
    start = time.perf_counter()
    dataset = build_dataset(videos_path, params, seed)
    torch.manual_seed(seed)
    model = PWCLite(**params.model.model_dump())
    if params.loss_schedule:  # the schedule's step counter, saved in the checkpoints
        attach_step_counter(model)
    loss_fn = make_flow_loss(params.loss, params.loss_schedule, params.train.grad_accum)

    # 2. ground truth for the eval, when there is some
    pairs = load_truth_pairs(videos_path, truth_path, "VAL", params.eval_videos)
    eval_fn = make_eval_fn(pairs) if pairs is not None and params.eval_videos else None

    # 3. the shared loop
    result = train_section(
        model,
        dataset,
        loss_fn,
        params,
        out_dir=out_dir,
        seed=seed,
        log_file=log_file,
        eval_fn=eval_fn,
        name="flow_train",
    )
    seconds = time.perf_counter() - start
    log.info("flow_train: %d steps in %.1f s", result.step, seconds)
    return FlowTrainReport(result, len(dataset))


OUT = "models/flow"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    fresh_checkpoints("flow_train", f"{OUT}/checkpoints")
    report = train_flow(
        frames_store(videos_store.PATH, params.shared.pseudo_label_frames),
        phantom_truth_store.PATH,
        params.flow_train,
        out_dir=OUT,
        log_file="plots/flow_train/train.tsv",
        seed=params.flow_train.train.seed_or(params.shared.seed),
    )
    finish_training(
        params.flow_train, f"{OUT}/params_used.json", "metrics/flow_train.json", report.as_dict()
    )
