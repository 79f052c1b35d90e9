"""The LV-area EF estimator of the stage (metrics group ``ef_lv``) and the LV-area plot.

1. Train the LV segmenter on the traced frames of real TRAIN videos (VolumeTracings.csv of
   the EchoNet root, rasterised at the prepared size and frame time); no root, no tracings
   or fewer than ``lv.min_traced`` traced TRAIN videos: ``{"skipped": reason}`` and the
   declared outputs of an untrained model (as for the EF regressors).
2. Per video: LV area per frame -> ``EF_raw``; ``EF = a + b EF_raw`` fitted on the labelled
   TRAIN videos (at least ``ef.min_labelled``, else the EF parts are skipped).
3. Scores, each beside its baseline: real VAL / TEST against their EF (and the TRAIN-mean
   predictor); each synthetic mode (transfer, self) against its driver's EF, against the
   EF of another driver (mismatched) and the TRAIN-mean predictor. A mode with several
   videos per driver (``sample.transfer_sources``: one motion on several anatomies) is
   scored over all of them, its intervals drawn by driver, and also per pairing and by
   each driver's mean (:func:`by_pairing`).
4. Without labels, per mode: the generated videos' relative LV-area curves against their
   drivers' (``<mode>_curve_*``: distance matched vs mismatched, driver retrieval).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from echomotion.evaluation.ef_regressor import bootstrap_intervals, regression_metrics
from echomotion.evaluation.lv import (
    LVSegmenter,
    TracedFrameDataset,
    dice,
    ef_from_areas,
    fit_calibration,
    lv_areas,
    lv_loss,
    predict_masks,
    raw_ef,
)
from echomotion.evaluation.motion_scores import area_curve_distance, curve_summary
from echomotion.evaluation.synthetic import source_index
from echomotion.evaluation.tracings import (
    read_source_sizes,
    read_traced_frames,
    stored_frame,
    tracing_mask,
)
from echomotion.stores.ragged import RaggedStore
from echomotion.stores.videos import frame_size
from echomotion.tasks.evaluate.data import EvalData, EvaluatePaths
from echomotion.tasks.evaluate.ef import (
    prefixed,
    scatter_rows,
    skipped,
    too_few_labels,
    write_skipped_regressor,
)
from echomotion.tasks.evaluate.figures import series_name
from echomotion.tasks.evaluate.params import EvaluateParams
from echomotion.training.checkpoint import discard_other_inputs
from echomotion.training.loop import train

log = logging.getLogger(__name__)

MODES = ("transfer", "self")
AREA_COLUMNS = ("series", "time_s", "area_px")


@dataclass
class TracedSet:
    """Traced frames of some real videos at the stored size and rate."""

    frames: np.ndarray  # (N, H, W) uint8
    masks: np.ndarray  # (N, H, W) bool
    rows: np.ndarray  # (N,) store row of each frame's video

    @property
    def n_videos(self) -> int:
        return len(np.unique(self.rows))


def traced_sets(store: RaggedStore, root: Path | None) -> dict[str, TracedSet]:
    """The traced frames of each split (TRAIN, VAL, TEST) of the prepared ``store``'s videos
    that have tracings and a stated source frame size in the EchoNet ``root``."""
    if root is None:
        return {}
    table = store.table
    names = [str(n) for n in table["file_name"]]
    tracings = read_traced_frames(root, set(names))
    sizes = read_source_sizes(root)
    lengths = store.lengths()
    size = frame_size(store)
    items: dict[str, list[tuple[np.ndarray, np.ndarray, int]]] = {}
    for row, name in enumerate(names):
        if name not in tracings or name not in sizes:
            continue
        video = store.video(row)
        fps, source_fps = float(table["fps"][row]), float(table["source_fps"][row])
        for frame, tracing in sorted(tracings[name].items()):
            k = stored_frame(frame, source_fps, fps, int(lengths[row]))
            mask = tracing_mask(tracing, sizes[name], size)
            items.setdefault(str(table["split"][row]), []).append((video[k], mask, row))
    return {
        split: TracedSet(
            np.stack([f for f, _, _ in rows]),
            np.stack([m for _, m, _ in rows]),
            np.array([r for _, _, r in rows], dtype=np.int64),
        )
        for split, rows in items.items()
    }


def train_lv(
    traced: dict[str, TracedSet], params: EvaluateParams, paths: EvaluatePaths, seed: int
) -> tuple[LVSegmenter | None, str | None]:
    """The LV segmenter of the traced TRAIN frames (out_dir ``paths.lv``), or (None, why
    not) with too few traced TRAIN videos."""
    p, log_file = params.lv, paths.plots / "lv_train.tsv"
    n = traced["TRAIN"].n_videos if "TRAIN" in traced else 0
    if n < p.min_traced:
        reason = (
            "no LV tracings of TRAIN videos (VolumeTracings.csv)"
            if n == 0
            else f"only {n} TRAIN video(s) with LV tracings (evaluate.lv.min_traced={p.min_traced})"
        )
        write_skipped_regressor(paths.lv, log_file, reason)
        return None, reason
    train_set = traced["TRAIN"]
    digest = hashlib.sha256(train_set.frames.tobytes() + train_set.masks.tobytes()).hexdigest()
    # the loop only checks the dataset length: drop checkpoints trained on other frames
    discard_other_inputs(paths.lv / "checkpoints", digest, stamp="data_fingerprint.txt")
    torch.manual_seed(seed)
    model = LVSegmenter.from_params(p.model)
    dataset = TracedFrameDataset(train_set.frames, train_set.masks, seed, p.augment)
    run_key = p.model_dump(mode="json", include={"model", "augment"})
    train(
        model, dataset, lv_loss, p.train,
        out_dir=paths.lv, seed=seed, log_file=log_file, name="lv", run_key=run_key,
    )  # fmt: skip
    return model.eval(), None


class _Areas:
    """LV area curves of real (store row) and synthetic (position) videos, computed once
    on ``device``, each frame's area read as ``mode`` says (:func:`areas_of`)."""

    def __init__(
        self,
        model: LVSegmenter,
        data: EvalData,
        batch: int,
        device: str | torch.device,
        mode: str = "largest",
    ):
        self.model, self.data, self.batch, self.device = model, data, batch, device
        self.mode = mode
        self.real: dict[int, np.ndarray] = {}
        self.synthetic: dict[int, np.ndarray] = {}

    def of_real(self, row: int) -> np.ndarray:
        if row not in self.real:
            video = self.data.store.video(row)
            self.real[row] = lv_areas(self.model, video, self.batch, device=self.device,
                                     mode=self.mode)  # fmt: skip
        return self.real[row]

    def of_synthetic(self, i: int) -> np.ndarray:
        if i not in self.synthetic:
            video = self.data.synthetic.read(i)
            self.synthetic[i] = lv_areas(self.model, video, self.batch, device=self.device,
                                          mode=self.mode)  # fmt: skip
        return self.synthetic[i]


def _mismatched(sources: list[str], labels: np.ndarray) -> np.ndarray:
    """Per video, the EF of the next video in order (cyclically) with another driver
    (NaN when every video shares one driver)."""
    n, out = len(sources), np.full(len(sources), np.nan)
    for i in range(n):
        for step in range(1, n):
            j = (i + step) % n
            if sources[j] != sources[i]:
                out[i] = labels[j]
                break
    return out


def segmentation_scores(
    model: LVSegmenter, traced: dict[str, TracedSet], batch: int, device: str | torch.device
) -> dict:
    """Dice of the traced frames of each split (segmented on ``device``), against the
    rasterised tracings."""
    out: dict = {}
    for split, s in sorted(traced.items()):
        pred = predict_masks(model, s.frames, batch, device=device) > 0.5
        out[f"n_traced_{split.lower()}"] = s.n_videos
        out[f"dice_{split.lower()}"] = float(dice(pred, s.masks).mean())
    return out


def lv_scores(
    data: EvalData,
    model: LVSegmenter,
    params: EvaluateParams,
    device: str | torch.device,
    seed: int = 0,
) -> tuple[dict, list[dict], list[dict]]:
    """The ``ef_lv`` metrics (beyond segmentation), EF scatter rows and LV-area rows, the
    segmenter run on ``device``. Real VAL/TEST and each synthetic mode also get bootstrap
    95 % intervals of R-squared and MAE (``*_ci_low``, ``*_ci_high``; resampled with
    ``seed``)."""
    areas = _Areas(model, data, params.batch_size, device, params.lv.area)
    rng = np.random.default_rng(seed)

    def scored(key: str, truth: np.ndarray, pred: np.ndarray, groups=None) -> dict:
        metrics = regression_metrics(truth, pred)
        metrics |= bootstrap_intervals(truth, pred, params.lv.bootstrap, rng, groups=groups)
        return prefixed(key, metrics)

    power, minimum = params.lv.area_power, params.ef.min_labelled
    table = data.store.table
    ef, names = table["ef"].astype(float), table["file_name"].astype(str)
    out: dict = {"area_power": power}
    # 1. calibration on the labelled TRAIN videos
    reason = too_few_labels(data.n_labelled("TRAIN"), "TRAIN", minimum)
    area_rows = lv_area_rows(data, areas)
    out |= curve_scores(data, areas)
    if reason is not None:
        return out | {p: skipped(reason) for p in ("real_val", "real_test", *MODES)}, [], area_rows
    train_rows = data.split_rows("TRAIN", labelled=True)
    train_raw = np.array([raw_ef(areas.of_real(int(r)), power) for r in train_rows])
    a, b = fit_calibration(train_raw, ef[train_rows])
    train_mean = float(ef[train_rows].mean())
    out |= {"calibration_a": a, "calibration_b": b, "train_mean_ef": train_mean}
    out |= prefixed("real_train", regression_metrics(ef[train_rows], a + b * train_raw))
    scatter = scatter_rows("real_train", names[train_rows], ef[train_rows], a + b * train_raw)
    # 2. real VAL and TEST against their EF, beside the TRAIN-mean predictor
    for split in ("VAL", "TEST"):
        key = f"real_{split.lower()}"
        why = too_few_labels(data.n_labelled(split), split, minimum)
        if why is not None:
            out[key] = skipped(why)
            continue
        rows = data.split_rows(split, labelled=True)
        pred = np.array([ef_from_areas(areas.of_real(int(r)), a, b, power) for r in rows])
        out |= scored(key, ef[rows], pred)
        out[f"{key}_train_mean_mae"] = float(np.abs(ef[rows] - train_mean).mean())
        scatter += scatter_rows(key, names[rows], ef[rows], pred)
    # 3. synthetic videos of each mode against their driver's EF, and against the
    # estimator's EF of their driving video
    labels = data.source_ef()

    def estimate(row: int) -> float:
        return ef_from_areas(areas.of_real(row), a, b, power)

    for mode in MODES:
        keep = [i for i, r in enumerate(data.records) if r.mode == mode and np.isfinite(labels[i])]
        why = too_few_labels(len(keep), f"the {mode}-mode synthetic videos (driver EF)", minimum)
        if why is not None:
            out[mode] = skipped(why)
            continue
        truth = labels[keep]
        pred = np.array([ef_from_areas(areas.of_synthetic(i), a, b, power) for i in keep])
        drivers = [data.records[i].motion_source for i in keep]
        other = _mismatched(drivers, truth)
        out |= scored(mode, truth, pred, groups=drivers) | by_pairing(mode, drivers, truth, pred)
        finite = np.isfinite(other)
        mismatched = regression_metrics(other[finite], pred[finite])
        out |= {f"{mode}_mismatched_{k}": mismatched[k] for k in ("mae", "r2")}
        out[f"{mode}_train_mean_mae"] = float(np.abs(truth - train_mean).mean())
        out |= _against_estimated_drivers(mode, data, keep, pred, estimate)
        scatter += scatter_rows(mode, [data.records[i].file_name for i in keep], truth, pred)
    return out, scatter, area_rows


def pairing_index(drivers: list[str]) -> np.ndarray:
    """Per video, how many videos of its driver come before it in the list: which of its
    driver's pairings (0: the first appearance source) it is."""
    seen: dict[str, int] = {}
    out = np.empty(len(drivers), dtype=np.int64)
    for i, driver in enumerate(drivers):
        out[i] = seen.get(driver, 0)
        seen[driver] = out[i] + 1
    return out


def by_pairing(mode: str, drivers: list[str], truth: np.ndarray, pred: np.ndarray) -> dict:
    """With several videos per driver (one motion on several anatomies): the EF scores of
    each pairing alone (``<mode>_pairing<k>_{r2,mae}``, k from 1: the k-th video of each
    driver), so the spread that one appearance pairing leaves is in view, and of each
    driver's mean EF over its videos (``<mode>_driver_mean_{r2,mae,n}``); {} with one
    video per driver."""
    k = pairing_index(drivers)
    if len(k) == 0 or k.max() == 0:
        return {}
    out: dict = {f"{mode}_pairings": int(k.max()) + 1}
    for j in range(int(k.max()) + 1):
        metrics = regression_metrics(truth[k == j], pred[k == j])
        out |= {f"{mode}_pairing{j + 1}_{m}": metrics[m] for m in ("r2", "mae")}
    names = np.asarray(drivers)
    unique = list(dict.fromkeys(drivers))
    mean_truth = np.array([truth[names == d].mean() for d in unique])
    mean_pred = np.array([pred[names == d].mean() for d in unique])
    metrics = regression_metrics(mean_truth, mean_pred)
    return out | {f"{mode}_driver_mean_{m}": metrics[m] for m in ("r2", "mae", "n")}


def _against_estimated_drivers(
    mode: str, data: EvalData, keep: list[int], pred: np.ndarray, estimate
) -> dict:
    """``<mode>_vs_estimated_driver_{r2,mae,bias,n}``: the generated videos' EF ``pred``
    against the same estimator's EF of their real driving videos (``estimate(row)``), so
    the estimator's own error on a driver (real VAL / TEST MAE) is not counted as the
    generator's; drivers not in the store are left out."""
    drivers = [data.records[i].motion_source for i in keep]
    rows = source_index(data.store.table["file_name"], drivers)
    found = rows >= 0
    driver = np.array([estimate(int(r)) for r in rows[found]])
    metrics = regression_metrics(driver, pred[found])
    return {f"{mode}_vs_estimated_driver_{k}": metrics[k] for k in ("r2", "mae", "bias", "n")}


def curve_scores(data: EvalData, areas: _Areas) -> dict:
    """Per mode, ``<mode>_curve_*``: each generated video's LV-area curve against those of
    the drivers of that mode (:func:`~echomotion.evaluation.motion_scores.curve_summary`:
    matched vs mismatched distance, driver retrieval beside chance), each driver's curve
    from the frame its generated videos start at. No EF label is used."""
    table, out = data.store.table, {}
    in_store = source_index(table["file_name"], [r.motion_source for r in data.records])
    for mode in MODES:
        keep = [i for i, r in enumerate(data.records) if r.mode == mode and in_store[i] >= 0]
        if not keep:
            continue
        drivers: dict[int, np.ndarray] = {}  # store row -> its curve from its motion start
        for i in keep:
            row = int(in_store[i])
            drivers.setdefault(row, areas.of_real(row)[data.records[i].motion_start :])
        fps = {row: float(table["fps"][row]) for row in drivers}
        distance = np.empty((len(keep), len(keep)))
        for a, i in enumerate(keep):
            record, curve = data.records[i], areas.of_synthetic(i)
            # a record without a frame rate is at its own driver's (as in lv_area_rows)
            gen_fps = record.rate(fps[int(in_store[i])])
            for b, j in enumerate(keep):
                row = int(in_store[j])
                distance[a, b] = area_curve_distance(curve, gen_fps, drivers[row], fps[row])
        sources = [data.records[i].motion_source for i in keep]
        appearance = [data.records[i].appearance_source for i in keep]
        summary = curve_summary(distance, sources, appearance)
        out |= {f"{mode}_{k}": v for k, v in summary.items()}
    return out


def lv_area_rows(data: EvalData, areas: _Areas) -> list[dict]:
    """Long-format LV area over time: ``<driver>/driver`` (the real driving video from the
    frame its first generated video started at, over the span of its generated videos)
    and ``<driver>/<mode>`` per generated video (``<mode><k>`` for a driver's k-th video of
    that mode, k from 2: ``transfer``, ``transfer2``, ...)."""
    table = data.store.table
    in_store = source_index(table["file_name"], [r.motion_source for r in data.records])
    rows: list[dict] = []
    by_driver: dict[int, list[int]] = {}
    for i, s in enumerate(in_store):
        if s >= 0:
            by_driver.setdefault(int(s), []).append(i)
    for s, generated in by_driver.items():
        driver, fps = str(table["file_name"][s]), float(table["fps"][s])
        span = 0.0
        curves = []
        for i, k in zip(generated, pairing_index([data.records[i].mode for i in generated]),
                        strict=True):  # fmt: skip
            record = data.records[i]
            gen_fps = record.rate(fps)
            curve = areas.of_synthetic(i)
            span = max(span, (len(curve) - 1) / gen_fps)
            series = series_name(record.mode, int(k))
            curves.append((f"{driver}/{series}", np.arange(len(curve)) / gen_fps, curve))
        real = areas.of_real(s)[data.records[generated[0]].motion_start :]
        t = np.arange(len(real)) / fps
        keep = t <= span + 0.5 / fps
        curves.insert(0, (f"{driver}/driver", t[keep], real[keep]))
        rows += [
            {"series": name, "time_s": round(float(x), 4), "area_px": round(float(y), 2)}
            for name, ts, ys in curves
            for x, y in zip(ts, ys, strict=True)
        ]
    return rows
