"""Stage ``transfer_oracle``: what the evaluation's motion measures give a perfect
transfer-mode generator.

``sample`` drives, in transfer mode, the reference frame of one video with the motion of
another, and ``evaluate`` asks whether each generated video moves as its driver does:
MAFE's vectors, identity-free vectors and the re-extracted ED->ES flow field, each as
driver retrieval among all drivers, and the relative LV-area curve. A heart with another
anatomy never moves exactly as its driver does, so even a perfect transfer need not find
its driver by every measure. The phantom can render that perfect transfer
(:mod:`echomotion.phantom.transfer`): the appearance video's anatomy, speckle and sector
with the driver's timing and contraction.

For every transfer-mode video of ``sample``'s ``FileList.csv`` this stage renders its exact
counterpart, stores it as ``prepare`` stores a video (the phantom's codec, decoding,
resizing, resampling), cuts the generated video's window from it (from ``MotionStart``,
``NumberOfFrames`` at its ``FPS``), and scores it against the drivers with ``evaluate``'s
own code (:mod:`echomotion.evaluation.motion_scores`, the LV segmenter ``evaluate``
trained). ``metrics/transfer_oracle.json`` holds the keys of ``evaluate``'s ``transfer_*``
motion keys and ``ef_lv.transfer_curve_*`` keys, unprefixed, and ``ef_*``: the EF that
``evaluate``'s LV-area estimator (its segmenter and calibration) reads from each exact
transfer, against the driver's EF (the ceiling of ``ef_lv.transfer_*``); ``ground_truth:
false`` when a video is not this phantom's (another dataset, another seed) or there is no
transfer video; no ``curve_*`` or ``ef_*`` keys without a trained LV segmenter (nor
``ef_*`` without the estimator's calibration in ``metrics/eval.json``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from echomotion.device import resolve_device
from echomotion.evaluation.ef_regressor import regression_metrics
from echomotion.evaluation.lv import LVSegmenter, ef_from_areas, lv_areas
from echomotion.evaluation.motion_fidelity import ed_es_or_detect
from echomotion.evaluation.motion_scores import (
    MotionInputs,
    area_curve_distance,
    curve_summary,
    motion_matrices,
    motion_summary,
    train_pairs,
)
from echomotion.evaluation.synthetic import SyntheticRecord, read_synthetic_table, source_index
from echomotion.flow.classical import FlowProvider, make_flow_provider
from echomotion.flow.pwc import PWCLite
from echomotion.mafe.model import MAFE
from echomotion.params import Params
from echomotion.phantom.params import PhantomParams
from echomotion.phantom.transfer import simulate_transfer
from echomotion.phantom.writer import file_name
from echomotion.stage import write_json
from echomotion.stores import features as features_store
from echomotion.stores import videos as videos_store
from echomotion.stores.features import video_motion
from echomotion.stores.ragged import RaggedStore
from echomotion.video import read_video, write_video

log = logging.getLogger(__name__)

SYNTHETIC = Path("data/synthetic/echonet")
LV_MODEL = Path("models/lv_segmenter/model")
EVAL_METRICS = Path("metrics/eval.json")  # evaluate's: the LV-area EF estimator's calibration


@dataclass(frozen=True)
class Phantom:
    """The phantom that made the prepared videos (its params and seed) and how
    ``prepare`` read them: frame ``size``, ``target_fps`` (None: the source rate) and
    whether a slower video was brought up to it (``upsample``)."""

    params: PhantomParams
    seed: int
    size: int
    target_fps: float | None
    upsample: bool

    def prepared_transfer(self, appearance: int, motion: int, tmp: Path) -> np.ndarray:
        """Video ``appearance`` moving as video ``motion`` (:func:`simulate_transfer`), as
        ``prepare`` stores it: written with the phantom's codec, decoded, resized and
        resampled as ``prepare`` reads every video."""
        path = tmp / f"{appearance}-{motion}.avi"
        frames = simulate_transfer(self.params, self.seed, appearance, motion).frames
        write_video(path, frames, self.params.fps, self.params.codec)
        return read_video(
            path,
            size=(self.size, self.size),
            target_fps=self.target_fps,
            fps=self.params.fps,
            upsample=self.upsample,
        ).frames


@dataclass(frozen=True)
class Scorers:
    """The evaluation's networks: ``mafe``, the flow ``provider``, the LV segmenter
    (``lv``; None: not trained), their ``batch`` size and ``device``, how an LV area is
    read from the segmenter (``lv_area``: ``evaluate.lv.area``), and the LV-area EF
    estimator's calibration ``(a, b, power)`` of :func:`ef_from_areas` (None: no EF scores;
    :func:`lv_calibration`)."""

    mafe: nn.Module
    provider: FlowProvider
    lv: LVSegmenter | None
    batch: int
    device: str | torch.device
    lv_area: str = "largest"
    ef_calibration: tuple[float, float, float] | None = None


def lv_calibration(eval_metrics: Path, power: float) -> tuple[float, float, float] | None:
    """``(a, b, power)`` of the ``evaluate`` stage's LV-area EF estimator, read from its
    metrics file (``ef_lv.calibration_a`` / ``_b``); None when it has none (no tracings or
    no EF labels: ``ef_lv`` skipped)."""
    if not eval_metrics.is_file():
        return None
    lv = json.loads(eval_metrics.read_text()).get("ef_lv", {})
    if "calibration_a" not in lv or "calibration_b" not in lv:
        return None
    return float(lv["calibration_a"]), float(lv["calibration_b"]), float(power)


def generated_window(
    video: np.ndarray, fps: float, rate: float, start: int, n_frames: int
) -> np.ndarray:
    """The frames of ``video`` (at ``fps``) a generated video shows that starts at frame
    ``start`` and runs at ``rate`` (its record's ``motion_start`` and
    :meth:`SyntheticRecord.rate`): ``n_frames`` of them, as many as the video has."""
    index = start + np.round(np.arange(n_frames) * fps / rate).astype(int)
    return video[index[index < len(video)]]


def oracle_scores(
    videos: RaggedStore,
    features: RaggedStore,
    records: list[SyntheticRecord],
    scorers: Scorers,
    phantom: Phantom,
) -> dict:
    """The motion measures of the exact counterparts of the transfer-mode ``records``
    against their drivers; ``{"ground_truth": False, ...}`` when a video of theirs is not
    one of the phantom's, or there is none."""
    index = {file_name(phantom.seed, i): i for i in range(phantom.params.n_videos)}
    names, table = videos.table["file_name"].astype(str), videos.table
    records = [r for r in records if r.mode == "transfer"]
    used = {n for r in records for n in (r.motion_source, r.appearance_source)}
    unknown = sorted(used - (set(index) & set(names)))
    if not records or unknown:
        why = f"{len(unknown)} videos are not the phantom's" if unknown else "no transfer video"
        log.warning("transfer oracle skipped: %s", why)
        return {"ground_truth": False, "skipped": why, "n_videos": 0}
    rows = source_index(names, [r.motion_source for r in records])
    feature_rows = source_index(features.table["file_name"], [r.motion_source for r in records])
    generated, driving, kept, areas, ef_pairs = ([], []), ([], []), [], [], []
    # a driver of several transfers (sample.transfer_sources) is read, and its ED/ES pair
    # and LV areas found, once: store row -> (video, fps, ED/ES pair), -> LV area per frame
    drivers: dict[int, tuple[np.ndarray, float, tuple[int, int] | None]] = {}
    driver_areas: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for record, row, feature_row in zip(records, rows, feature_rows, strict=True):
            row = int(row)
            if row not in drivers:
                video, fps = videos.video(row), float(table["fps"][row])
                pair = ed_es_or_detect(video, int(table["ed"][row]), int(table["es"][row]), fps)
                drivers[row] = video, fps, pair
            video, fps, drive_pair = drivers[row]
            full = phantom.prepared_transfer(
                index[record.appearance_source], index[record.motion_source], Path(tmp)
            )
            if full.shape != video.shape:
                raise ValueError(
                    f"the exact transfer of {record.file_name} has shape {full.shape}, its "
                    f"prepared driver {record.motion_source} {video.shape}"
                )
            n = record.n_frames if record.n_frames > 0 else len(video)
            rate = record.rate(fps)
            oracle = generated_window(full, fps, rate, record.motion_start, n)
            gen_pair = ed_es_or_detect(oracle, record.ed, record.es, rate)
            if gen_pair is None or drive_pair is None or feature_row < 0:
                continue
            for frames, pair, out in ((oracle, gen_pair, generated), (video, drive_pair, driving)):
                out[0].append(frames[pair[0]]), out[1].append(frames[pair[1]])
            kept.append((record, row, int(feature_row)))
            if scorers.lv is not None:
                curve = lv_areas(scorers.lv, oracle, scorers.batch, device=scorers.device,
                                 mode=scorers.lv_area)  # fmt: skip
                if row not in driver_areas:
                    driver_areas[row] = lv_areas(
                        scorers.lv, video, scorers.batch, device=scorers.device,
                        mode=scorers.lv_area,
                    )  # fmt: skip
                areas.append((curve, rate, driver_areas[row][record.motion_start :], fps))
                truth = float(table["ef"][row]) if "ef" in table else float("nan")
                if scorers.ef_calibration is not None and np.isfinite(truth):
                    ef_pairs.append((truth, ef_from_areas(curve, *scorers.ef_calibration)))
    if not kept:
        return {"ground_truth": True, "n_videos": 0}
    inputs = MotionInputs(
        generated=(np.stack(generated[0]), np.stack(generated[1])),
        condition=video_motion(features)[[f for _, _, f in kept]],
        condition_stats=(features.attrs["motion_mean"], features.attrs["motion_std"]),
        driving=(np.stack(driving[0]), np.stack(driving[1])),
        train=train_pairs(videos),
    )
    cos, cos_still, epe = motion_matrices(
        inputs, scorers.mafe, scorers.provider, scorers.batch, scorers.device
    )
    sources = [r.motion_source for r, _, _ in kept]
    appearance = [r.appearance_source for r, _, _ in kept]
    out = {"ground_truth": True, "n_videos": len(kept)}
    out |= motion_summary(cos, cos_still, epe, sources, appearance)
    if areas:
        distance = np.array([[area_curve_distance(g, g_fps, d, d_fps) for _, _, d, d_fps in areas]
                             for g, g_fps, _, _ in areas])  # fmt: skip
        out |= curve_summary(distance, sources, appearance)
    if ef_pairs:  # the estimator's EF of each exact transfer against its driver's EF
        truth, pred = (np.array(v) for v in zip(*ef_pairs, strict=True))
        out |= {f"ef_{k}": v for k, v in regression_metrics(truth, pred).items()}
    return out


def _lv_segmenter(path: Path, device) -> LVSegmenter | None:
    """``evaluate``'s LV segmenter, or None where it was not trained (``SKIPPED.txt``)."""
    if (path / "SKIPPED.txt").is_file():
        log.warning("no LV segmenter (%s): no LV-area curve scores", (path / "SKIPPED.txt"))
        return None
    return LVSegmenter.from_pretrained(path).to(device).eval()


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    device = resolve_device(params.shared.device)
    flow = params.evaluate.motion.flow
    model = None
    if flow.method == "network":
        model = PWCLite.from_pretrained("models/flow/model").to(device)
    scorers = Scorers(
        MAFE.from_pretrained("models/mafe/model").to(device).eval(),
        make_flow_provider(flow, model),
        _lv_segmenter(LV_MODEL, device),
        params.evaluate.batch_size,
        device,
        params.evaluate.lv.area,
        lv_calibration(EVAL_METRICS, params.evaluate.lv.area_power),
    )
    prepare = params.prepare
    phantom = Phantom(
        params.phantom, params.shared.seed, prepare.size, prepare.target_fps,
        prepare.low_fps == "repeat",
    )  # fmt: skip
    metrics = oracle_scores(
        RaggedStore(videos_store.PATH),
        RaggedStore(features_store.PATH),
        read_synthetic_table(SYNTHETIC),
        scorers,
        phantom,
    )
    write_json("metrics/transfer_oracle.json", metrics)
