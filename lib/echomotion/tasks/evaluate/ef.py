"""The two EF regressors of the stage: trained on real TRAIN, and on synthetic videos only.

EF labels are optional. A regressor is trained only on the videos that have an EF label,
and only when there are at least ``ef.min_labelled`` of them; a score is computed only
when at least that many test videos have one. Whatever cannot be computed is reported as
``{"skipped": reason}`` under its name, never as a number, and the declared outputs of an
untrained regressor still exist (``model/SKIPPED.txt`` with the reason, an empty
checkpoints folder, the curve's header).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from echomotion.evaluation.ef_regressor import (
    ArrayClipDataset,
    EFRegressor,
    LabelledWindowDataset,
    ef_loss,
    predict_ef,
    regression_metrics,
)
from echomotion.tasks.evaluate.data import EvalData, EvaluatePaths
from echomotion.tasks.evaluate.params import EFParams, EvaluateParams
from echomotion.training.checkpoint import discard_other_inputs, write_dir_atomically
from echomotion.training.loop import train_section

log = logging.getLogger(__name__)


def _fingerprint(*parts: np.ndarray) -> str:
    digest = hashlib.sha256()
    for p in parts:
        digest.update(np.ascontiguousarray(p).tobytes())
    return digest.hexdigest()


def skipped(reason: str) -> dict[str, str]:
    """The metrics entry of something not computed."""
    return {"skipped": reason}


def too_few_labels(n: int, what: str, minimum: int) -> str | None:
    """Why ``n`` labelled videos of ``what`` are not enough (None when they are)."""
    if n == 0:
        return f"no EF labels in {what}"
    if n < minimum:
        return f"only {n} video(s) of {what} with an EF label (evaluate.ef.min_labelled={minimum})"
    return None


def synthetic_labels(data: EvalData) -> tuple[np.ndarray, np.ndarray]:
    """Each synthetic video's label (its motion source's EF, NaN when unknown) and the
    indices of the labelled ones."""
    labels = data.source_ef()
    return labels, np.flatnonzero(np.isfinite(labels))


def too_few_synthetic(n: int, minimum: int) -> str | None:
    """Why ``n`` synthetic videos with a labelled motion source are not enough."""
    return too_few_labels(n, "the synthetic set (EF of the motion source)", minimum)


def write_skipped_regressor(out_dir: Path, log_file: Path, reason: str) -> None:
    """The declared outputs of a regressor that was not trained: ``model/SKIPPED.txt``
    (the reason), a checkpoints folder without checkpoints, a training curve of its header."""
    log.warning("%s not trained: %s", out_dir, reason)
    discard_other_inputs(out_dir / "checkpoints", "skipped", stamp="data_fingerprint.txt")
    write_dir_atomically(out_dir / "model", lambda d: (d / "SKIPPED.txt").write_text(reason + "\n"))
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("step\tloss\n")


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
) -> tuple[EFRegressor | None, str | None]:
    """The EF regressor of the labelled real TRAIN videos (out_dir ``models/ef_regressor``),
    or (None, why not) with too few labels."""
    reason = too_few_labels(data.n_labelled("TRAIN"), "TRAIN", params.ef.min_labelled)
    if reason is not None:
        write_skipped_regressor(paths.ef_real, paths.plots / "ef_train.tsv", reason)
        return None, reason
    dataset = LabelledWindowDataset(data.store.path, params.clip_frames, ("TRAIN",), seed)
    t = data.store.table
    fingerprint = _fingerprint(
        dataset.videos,
        data.store.lengths(),
        t["ef"].astype(float),
        np.array(t["file_name"].astype(str).tolist(), dtype="U"),
    )
    model = train_ef(
        dataset,
        fingerprint,
        params.ef,
        paths.ef_real,
        paths.plots / "ef_train.tsv",
        seed,
        "ef_real",
    )
    return model, None


def train_synthetic_ef(
    data: EvalData, params: EvaluateParams, paths: EvaluatePaths, seed: int
) -> tuple[EFRegressor | None, str | None]:
    """The EF regressor of synthetic videos only, labelled with their motion source's EF,
    or (None, why not): ``ef.downstream`` off, too few synthetic videos with a labelled
    source, or too few labelled real TEST videos to test it on."""
    labels, keep = synthetic_labels(data)
    minimum = params.ef.min_labelled
    reason = (
        "evaluate.ef.downstream is false"
        if not params.ef.downstream
        else too_few_synthetic(len(keep), minimum)
        or too_few_labels(data.n_labelled("TEST"), "TEST", minimum)
    )
    if reason is not None:
        out = paths.ef_synthetic
        write_skipped_regressor(out, paths.plots / "ef_train_synthetic.tsv", reason)
        return None, reason
    videos = [data.synthetic.read(int(k)) for k in keep]
    dataset = ArrayClipDataset(videos, labels[keep], params.clip_frames, seed)
    fingerprint = _fingerprint(labels[keep], *videos)
    model = train_ef(
        dataset,
        fingerprint,
        params.ef,
        paths.ef_synthetic,
        paths.plots / "ef_train_synthetic.tsv",
        seed,
        "ef_synthetic",
    )
    return model, None


def scatter_rows(kind: str, names, truth: np.ndarray, pred: np.ndarray) -> list[dict]:
    """Rows of an EF scatter plot (:data:`SCATTER_COLUMNS`), one per video of set ``kind``."""
    return [
        {"set": kind, "file_name": str(n), "ef_true": float(t), "ef_pred": float(p)}
        for n, t, p in zip(names, truth, pred, strict=True)
    ]


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` with keys ``<prefix>_<key>``."""
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


SCATTER_COLUMNS = ("set", "file_name", "ef_true", "ef_pred")


def ef_scores(
    data: EvalData,
    real: EFRegressor | None,
    synthetic: EFRegressor | None,
    params: EvaluateParams,
    why_not: dict[str, str] | None = None,
    *,
    device: str | torch.device,
) -> tuple[dict, list[dict]]:
    """EF metrics and the scatter rows (set, file_name, ef_true, ef_pred), the regressors
    moved to and run on ``device``.

    ``real_test_*``: the real-trained regressor on real TEST; ``synthetic_*``: it on the
    synthetic videos against their motion source's EF; ``downstream_synthetic_*``: the
    synthetic-trained regressor on real TEST (EchoNet-Synthetic protocol). A part that
    cannot be computed is ``{"skipped": reason}`` under its name (``real_test``,
    ``synthetic``, ``downstream_synthetic``); ``why_not`` gives the reason a regressor is
    None (keys ``real``, ``synthetic``). ``n_labelled_train`` / ``n_labelled_test`` count
    the real videos with an EF label.
    """
    why_not = why_not or {}
    length, k, batch, minimum = (
        params.clip_frames, params.ef.test_clips, params.batch_size, params.ef.min_labelled
    )  # fmt: skip
    metrics: dict = {
        "n_labelled_train": data.n_labelled("TRAIN"),
        "n_labelled_test": data.n_labelled("TEST"),
    }
    rows: list[dict] = []
    no_test = too_few_labels(metrics["n_labelled_test"], "TEST", minimum)
    if no_test is None:
        test_rows = data.split_rows("TEST", labelled=True)
        test = data.split("TEST", labelled=True)
        truth = data.store.table["ef"][test_rows].astype(float)
    no_real = why_not.get("real", "no regressor trained on real videos") if real is None else None
    # 1. the real-trained regressor on real TEST
    if no_real or no_test:
        metrics["real_test"] = skipped(no_real or no_test)
    else:
        pred = predict_ef(real, test, length, k, batch, device=device)
        metrics |= prefixed("real_test", regression_metrics(truth, pred))
        rows += scatter_rows("real_test", test.names, truth, pred)
    # 2. it on synthetic videos, against the EF of their motion source
    labels, keep = synthetic_labels(data)
    no_syn = no_real or too_few_synthetic(len(keep), minimum)
    if no_syn:
        metrics["synthetic"] = skipped(no_syn)
    else:
        syn = data.synthetic.subset(keep)
        syn_pred = predict_ef(real, syn, length, k, batch, device=device)
        metrics |= prefixed("synthetic", regression_metrics(labels[keep], syn_pred))
        rows += scatter_rows("synthetic", syn.names, labels[keep], syn_pred)
    # 3. downstream: trained on synthetic only, tested on real TEST
    if synthetic is None or no_test:
        reason = why_not.get("synthetic", "no regressor trained on synthetic videos")
        metrics["downstream_synthetic"] = skipped(no_test or reason)
    else:
        down = predict_ef(synthetic, test, length, k, batch, device=device)
        metrics |= prefixed("downstream_synthetic", regression_metrics(truth, down))
        rows += scatter_rows("downstream_synthetic", test.names, truth, down)
    return metrics, rows
