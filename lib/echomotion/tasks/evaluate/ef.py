"""The two EF regressors of the stage: trained on real TRAIN, and on synthetic videos only."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from echomotion.evaluation import (
    ArrayClipDataset,
    EFRegressor,
    LabelledWindowDataset,
    ef_loss,
    predict_ef,
    regression_metrics,
)
from echomotion.training import train_section
from echomotion.training.checkpoint import discard_other_inputs

from .data import EvalData, EvaluatePaths
from .params import EFParams, EvaluateParams

log = logging.getLogger(__name__)


def _fingerprint(*parts: np.ndarray) -> str:
    digest = hashlib.sha256()
    for p in parts:
        digest.update(np.ascontiguousarray(p).tobytes())
    return digest.hexdigest()


def train_ef(
    dataset: Dataset,
    fingerprint: str,
    params: EFParams,
    out_dir: Path,
    log_file: Path,
    seed: int,
    name: str,
) -> EFRegressor:
    """Train (or resume) an EF regressor on ``dataset``; return it in eval mode."""
    # the loop only checks the dataset length: drop checkpoints trained on other data
    discard_other_inputs(out_dir / "checkpoints", fingerprint, stamp="data_fingerprint.txt")
    torch.manual_seed(seed)
    model = EFRegressor.from_params(params.model)
    train_section(
        model,
        dataset,
        ef_loss,
        params,
        out_dir=out_dir,
        seed=seed,
        log_file=log_file,
        name=name,
    )
    return model.eval()


def train_real_ef(
    data: EvalData, params: EvaluateParams, paths: EvaluatePaths, seed: int
) -> EFRegressor:
    """The EF regressor of real TRAIN videos (out_dir ``models/ef_regressor``)."""
    dataset = LabelledWindowDataset(data.store.path, params.clip_frames, ("TRAIN",), seed)
    t = data.store.table
    fingerprint = _fingerprint(
        dataset.videos,
        data.store.lengths(),
        t["ef"].astype(float),
        np.array(t["file_name"].astype(str).tolist(), dtype="U"),
    )
    return train_ef(
        dataset,
        fingerprint,
        params.ef,
        paths.ef_real,
        paths.plots / "ef_train.tsv",
        seed,
        "ef_real",
    )


def train_synthetic_ef(
    data: EvalData, params: EvaluateParams, paths: EvaluatePaths, seed: int
) -> EFRegressor | None:
    """The EF regressor of synthetic videos only, labelled with their motion source's EF;
    None when no synthetic video has a labelled source."""
    labels = data.source_ef()
    keep = np.flatnonzero(np.isfinite(labels))
    if len(keep) == 0:
        log.warning("no synthetic video has a motion source with EF: no downstream regressor")
        return None
    videos = [data.synthetic.read(int(k)) for k in keep]
    dataset = ArrayClipDataset(videos, labels[keep], params.clip_frames, seed)
    fingerprint = _fingerprint(labels[keep], *videos)
    return train_ef(
        dataset,
        fingerprint,
        params.ef,
        paths.ef_synthetic,
        paths.plots / "ef_train_synthetic.tsv",
        seed,
        "ef_synthetic",
    )


def _scatter(kind: str, names: list[str], truth: np.ndarray, pred: np.ndarray) -> list[dict]:
    return [
        {"set": kind, "file_name": n, "ef_true": float(t), "ef_pred": float(p)}
        for n, t, p in zip(names, truth, pred, strict=True)
    ]


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def ef_scores(
    data: EvalData, real: EFRegressor, synthetic: EFRegressor | None, params: EvaluateParams
) -> tuple[dict[str, float], list[dict]]:
    """EF metrics and the scatter rows (set, file_name, ef_true, ef_pred).

    ``real_test_*``: the real-trained regressor on real TEST; ``synthetic_*``: it on the
    synthetic videos against their motion source's EF; ``downstream_synthetic_*``: the
    synthetic-trained regressor on real TEST (EchoNet-Synthetic protocol).
    """
    length, k, batch = params.clip_frames, params.ef.test_clips, params.batch_size
    test_rows = data.split_rows("TEST", labelled=True)
    test = data.split("TEST", labelled=True)
    truth = data.store.table["ef"][test_rows].astype(float)
    # 1. the real-trained regressor on real TEST
    pred = predict_ef(real, test, length, k, batch)
    metrics = _prefixed("real_test", regression_metrics(truth, pred))
    rows = _scatter("real_test", test.names, truth, pred)
    # 2. it on synthetic videos, against the EF of their motion source
    labels = data.source_ef()
    keep = np.flatnonzero(np.isfinite(labels))
    syn = data.synthetic.subset(keep)
    syn_pred = predict_ef(real, syn, length, k, batch) if len(keep) else np.zeros(0)
    metrics |= _prefixed("synthetic", regression_metrics(labels[keep], syn_pred))
    rows += _scatter("synthetic", syn.names, labels[keep], syn_pred)
    # 3. downstream: trained on synthetic only, tested on real TEST
    if synthetic is not None:
        down = predict_ef(synthetic, test, length, k, batch)
        metrics |= _prefixed("downstream_synthetic", regression_metrics(truth, down))
        rows += _scatter("downstream_synthetic", test.names, truth, down)
    return metrics, rows
