"""Stage ``phantom``: the synthetic echo dataset in EchoNet-Dynamic layout, and its truth.

Writes ``data/phantom/echonet`` (``Videos/``, ``FileList.csv``, ``VolumeTracings.csv``)
and the ground-truth store (:mod:`echomotion.stores.phantom_truth`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from echomotion.params import Params, write_used_params
from echomotion.phantom.params import PhantomParams
from echomotion.phantom.simulate import PhantomVideo, simulate_video
from echomotion.phantom.writer import (
    FILE_LIST_COLUMNS,
    SPLITS,
    TRACING_COLUMNS,
    _file_list_row,
    _tracing_rows,
    _write_csv,
    assign_splits,
    file_name,
)
from echomotion.stage import write_json
from echomotion.stores.phantom_truth import open_writer, truth_row
from echomotion.video import write_video

log = logging.getLogger(__name__)


def _min_cell_area(video: PhantomVideo) -> float:
    """Smallest signed area of a pixel triangle's image under G inside the fan, at the
    most contracted frame (1 = undeformed, <= 0 = folded)."""
    t = int(np.argmax(video.phase))
    h, w = video.labels.shape[1:]
    g = video.displacement[t] + np.stack(np.meshgrid(np.arange(w), np.arange(h)))  # (2, H, W)
    a, b, c = g[:, :-1, :-1], g[:, :-1, 1:], g[:, 1:, :-1]
    ab, ac = b - a, c - a
    area = ab[0] * ac[1] - ab[1] * ac[0]  # (H-1, W-1)
    return float(area[video.labels[t, :-1, :-1] > 0].min())


def _summary(rows: list[dict[str, Any]], fold: float, max_disp: float) -> dict[str, Any]:
    ef = np.array([r["ef"] for r in rows])
    frames = np.array([r["n_frames"] for r in rows])
    splits = [r["split"] for r in rows]
    return {
        "n_videos": len(rows), "n_frames": int(frames.sum()),
        **{f"n_{s.lower()}": splits.count(s) for s in SPLITS},
        "frames_per_video_mean": float(frames.mean()), "ef_mean": float(ef.mean()),
        "ef_min": float(ef.min()), "ef_max": float(ef.max()),
        "edv_mean": float(np.mean([r["edv"] for r in rows])),
        "esv_mean": float(np.mean([r["esv"] for r in rows])),
        "heart_rate_bpm_mean": float(np.mean([r["heart_rate_bpm"] for r in rows])),
        "min_cell_area": fold, "max_displacement_px": max_disp,
    }  # fmt: skip


def generate_phantom(params: PhantomParams, seed: int, out_dir: str | Path) -> dict[str, Any]:
    """Write ``out_dir/echonet`` (EchoNet-Dynamic layout) and ``out_dir/truth.zarr``.

    Returns summary counts and statistics for the stage's metrics file.
    """
    out_dir = Path(out_dir)
    final, tmp = out_dir / "echonet", out_dir / ".echonet.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "Videos").mkdir(parents=True)
    attrs = {"seed": seed, "params": params.model_dump(mode="json")}
    splits = assign_splits(params.n_videos, params.split_fractions, seed)
    table, file_list, tracings, fold, max_disp = [], [], [], np.inf, 0.0
    with open_writer(out_dir / "truth.zarr", params.size, attrs) as store:
        for i in tqdm(range(params.n_videos), desc="phantom", unit="video"):
            name, video = file_name(seed, i), simulate_video(params, seed, i)
            write_video(tmp / "Videos" / f"{name}.avi", video.frames, params.fps, params.codec)
            row = truth_row(name, splits[i], video, params.fps)
            store.append(
                {"displacement": np.round(video.displacement * 256.0) / 256.0,
                 "labels": video.labels,
                 "phase": video.phase, "lv_volume_ml": video.lv_volume_ml},
                **row,
            )  # fmt: skip
            table.append(row)
            file_list.append(_file_list_row(name, splits[i], video, params))
            tracings += _tracing_rows(name, video)
            fold = min(fold, _min_cell_area(video))
            max_disp = max(max_disp, float(np.abs(video.displacement).max()))
    _write_csv(tmp / "FileList.csv", FILE_LIST_COLUMNS, file_list)
    _write_csv(tmp / "VolumeTracings.csv", TRACING_COLUMNS, tracings)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log.info("wrote %s: %d videos", final, params.n_videos)
    return _summary(table, fold, max_disp)


OUT = Path("data/phantom")


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    summary = generate_phantom(params.phantom, params.shared.seed, OUT)
    write_used_params(params.phantom, OUT / "params_used.json")
    write_json("metrics/phantom.json", summary)
