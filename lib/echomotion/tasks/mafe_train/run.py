"""Stage ``mafe_train``: MAFE on ED/mid/ES triplets with pseudo flow and ReID labels.

Trained with the project's one loop (``echomotion.training.train``) on the TRAIN triplets
(augmented, see :mod:`.dataset`) and scored on the VAL triplets at every checkpoint (the
official code keeps the weights of the best VAL PSNR: ``train.best_metric: psnr``) and at
the end: interpolation PSNR/SSIM
of the middle frame beside two naive baselines (copy the nearer input frame; the 50/50
blend of both), end-point errors of the head's flows and of the flow decoded from the
motion features alone (``flow_from_motion``) against the pseudo flow and, on the phantom,
against the ground truth; and the cosine between MAFE's appearance embedding and the ReID
embedding it regresses.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from echomotion.diffusion.metrics import psnr, ssim
from echomotion.flow.metrics import end_point_error
from echomotion.flow.truth import PAIRS, load_truth_pairs
from echomotion.mafe.dataset import PseudoLabelTriplets
from echomotion.mafe.losses import mafe_loss
from echomotion.mafe.model import MAFE
from echomotion.params import Params
from echomotion.stage import finish_training
from echomotion.stores import phantom_truth as phantom_truth_store
from echomotion.stores import pseudo_flow as pseudo_flow_store
from echomotion.stores import pseudo_reid as pseudo_reid_store
from echomotion.stores import videos as videos_store
from echomotion.stores.videos import frames_store
from echomotion.tasks.mafe_train.params import MAFETrainParams
from echomotion.training.fingerprint import fresh_checkpoints
from echomotion.training.loop import train_section

logger = logging.getLogger(__name__)


PSNR_CAP = 100.0  # dB: identical images would give inf


def interpolation_scores(pred: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-item PSNR and SSIM (B,) of ``pred`` and of the nearest-frame and blend baselines."""
    t = batch["timestep"].view(-1, 1, 1, 1)
    candidates = {
        "": pred,
        "_nearest": torch.where(t <= 0.5, batch["img0"], batch["img1"]),
        "_blend": 0.5 * (batch["img0"] + batch["img1"]),
    }
    scores = {}
    for suffix, image in candidates.items():
        scores[f"psnr{suffix}"] = psnr(image, batch["gt"]).clamp(max=PSNR_CAP)
        scores[f"ssim{suffix}"] = ssim(image, batch["gt"])
    return scores


def _epe(pred: Tensor, target: Tensor) -> float:
    """Mean EPE of (B, 4, H, W) flow pairs (both halves)."""
    return end_point_error(
        pred.reshape(-1, 2, *pred.shape[-2:]), target.reshape(-1, 2, *target.shape[-2:])
    )


def flow_errors(out: dict, batch: dict[str, Tensor], truth: Tensor | None) -> dict[str, float]:
    """Batch-mean EPEs of the head's and the motion-decoded flows against the pseudo flow and,
    when ``truth`` (B, 4, H, W) is given, the ground truth (with pseudo and zero flow too)."""
    flows, motion, pseudo = out["flows"], out["flow_from_motion"], batch["flow"]
    errors = {
        "epe_flows_vs_pseudo": _epe(flows, pseudo),
        "epe_motion_vs_pseudo": _epe(motion, pseudo),
    }
    if truth is not None:
        errors |= {
            "epe_flows_vs_gt": _epe(flows, truth),
            "epe_motion_vs_gt": _epe(motion, truth),
            "epe_pseudo_vs_gt": _epe(pseudo, truth),
            "epe_zero_vs_gt": _epe(torch.zeros_like(truth), truth),
        }
    return errors


def truth_flows(
    videos_path: str | Path, truth_path: str | Path | None, dataset: PseudoLabelTriplets
) -> dict[int, Tensor] | None:
    """Ground-truth flow mid->ED, mid->ES (4, H, W) of every VAL video of ``dataset`` by
    store index (the flow stage's :func:`load_truth_pairs`); None unless every one has it."""
    pairs = None if truth_path is None else load_truth_pairs(videos_path, truth_path, "VAL")
    if pairs is None:
        return None
    by_name: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for name, kind, flow in zip(pairs.file_names, pairs.kind, pairs.flow, strict=True):
        by_name[str(name)][str(kind)] = flow  # (2, H, W)
    table = dataset.triplets.table
    names = {int(v): str(table["file_name"][v]) for v in dataset.triplets.videos}
    if any(set(by_name.get(n, {})) != set(PAIRS) for n in names.values()):
        return None
    return {
        v: torch.from_numpy(np.concatenate([by_name[n][k] for k in PAIRS]))
        for v, n in names.items()
    }


@torch.no_grad()
def evaluate_mafe(
    model: MAFE,
    dataset: PseudoLabelTriplets,
    truth: dict[int, Tensor] | None,
    batch_size: int,
) -> dict[str, float]:
    """VAL metrics of ``model`` (see the module docstring), averaged over items."""
    model.eval()
    sums: dict[str, float] = defaultdict(float)
    for batch in DataLoader(dataset, batch_size=batch_size):
        n = len(batch["video"])
        out = model(batch["img0"], batch["img1"], batch["timestep"])
        for key, values in interpolation_scores(out["pred"], batch).items():
            sums[key] += float(values.sum())
        gt = None if truth is None else torch.stack([truth[int(v)] for v in batch["video"]])
        for key, value in flow_errors(out, batch, gt).items():
            sums[key] += value * n
        cosine = F.cosine_similarity(out["embedding_from_appearance"], batch["reid"], dim=-1)
        sums["reid_cosine"] += float(cosine.mean(1).sum())
    metrics = {k: v / len(dataset) for k, v in sums.items()}
    return {**metrics, "n_videos": len(dataset)}


def last_row(log_file: Path) -> dict[str, float]:
    """The last row of a training curve TSV (empty when there is none)."""
    if not log_file.is_file():
        return {}
    with log_file.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {k: float(v) for k, v in rows[-1].items()} if rows else {}


def check_reid_dim(params: MAFETrainParams, dataset: PseudoLabelTriplets) -> None:
    """MAFE's ReID head must regress embeddings of the stored width."""
    if params.model.reid_dim != dataset.reid_dim:
        raise ValueError(
            f"mafe_train.model.reid_dim ({params.model.reid_dim}) differs from the ReID "
            f"embeddings' width ({dataset.reid_dim}); set them equal"
        )


def train_mafe(
    videos_path: str | Path,
    flow_path: str | Path,
    reid_path: str | Path,
    params: MAFETrainParams,
    *,
    out_dir: str | Path,
    seed: int,
    log_file: str | Path | None = None,
    truth_path: str | Path | None = None,
) -> dict:
    """Train MAFE (continuing any checkpoint in ``out_dir``) and score it on VAL.

    ``truth_path``: the phantom's truth store, for EPE against the ground truth (skipped
    for videos it does not hold). Returns the metrics: ``train`` (last curve row) and
    ``val`` (:func:`evaluate_mafe`). Writes ``out_dir/model`` and the curves.
    """
    # 1. data: augmented TRAIN triplets, plain VAL triplets and their ground-truth flows
    common = {
        "videos_path": videos_path,
        "flow_path": flow_path,
        "reid_path": reid_path,
        "seed": seed,
    }
    train_set = PseudoLabelTriplets(
        splits=("TRAIN",),
        augment=params.augment,
        extra_triplets=params.extra_triplets,
        extra_half_gap=params.extra_half_gap,
        **common,
    )
    val_set = PseudoLabelTriplets(splits=("VAL",), **common)
    check_reid_dim(params, train_set)
    truth = truth_flows(videos_path, truth_path, val_set)
    logger.info(
        "%d TRAIN items, %d VAL triplets, ground truth: %s",
        len(train_set),
        len(val_set),
        truth is not None,
    )
    # 2. the model, initialised from the seed, and its evaluation at each checkpoint
    torch.manual_seed(seed)
    model = MAFE.from_params(params.model)
    evaluate = partial(
        evaluate_mafe, dataset=val_set, truth=truth, batch_size=params.eval_batch_size
    )
    # 3. the shared training loop
    out_dir = Path(out_dir)
    log_file = Path(log_file) if log_file is not None else out_dir / "train.tsv"
    result = train_section(
        model,
        train_set,
        partial(mafe_loss, params=params.loss),
        params,
        out_dir=out_dir,
        seed=seed,
        log_file=log_file,
        eval_fn=(lambda m, step: evaluate(m)) if len(val_set) else None,
        name="mafe_train",
    )
    # 4. final scores (of the best eval's weights with train.best_metric)
    val = evaluate(model) if len(val_set) else {}
    metrics = {"train": last_row(log_file), "val": val, "ground_truth": truth is not None}
    return metrics | ({"best": result.best} if result.best is not None else {})


OUT = "models/mafe"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    fresh_checkpoints("mafe_train", f"{OUT}/checkpoints")
    metrics = train_mafe(
        frames_store(videos_store.PATH, params.shared.pseudo_label_frames),
        pseudo_flow_store.PATH,
        pseudo_reid_store.PATH,
        params.mafe_train,
        out_dir=OUT,
        seed=params.mafe_train.train.seed_or(params.shared.seed),
        log_file="plots/mafe_train/train.tsv",
        truth_path=phantom_truth_store.PATH,
    )
    finish_training(params.mafe_train, f"{OUT}/params_used.json", "metrics/mafe.json", metrics)
