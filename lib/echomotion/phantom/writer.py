"""The phantom dataset on disk: EchoNet-Dynamic layout plus the ground-truth store.

``out_dir/echonet/``: FileList.csv, VolumeTracings.csv and Videos/<FileName>.avi exactly
as EchoNet-Dynamic lays them out. ``out_dir/truth.zarr``: a ragged store (see
:data:`TRUTH_SCHEMA`) with what real data lacks. Both are written under temporary
names and renamed when complete.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from echomotion.config import PhantomParams
from echomotion.store import RaggedStoreWriter
from echomotion.video import write_video

from .anatomy import LABELS
from .simulate import PhantomVideo, simulate_video

log = logging.getLogger(__name__)

FILE_LIST_COLUMNS = (
    "FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split",
)  # fmt: skip
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = ("TRAIN", "VAL", "TEST")
TRUTH_SCHEMA = {
    "displacement": "(N, 2, H, W) float16, pixels, quantised to 1/256: backward map of "
    "each frame to the reference (ED) configuration, u_t(x) = G_t(x) - x; pixel x of "
    "frame t shows the tissue at G_t(x) of the reference; channel 0 dx (columns), 1 dy "
    "(rows). Ground-truth flow a->b: echomotion.phantom.flow_between(disp_a, disp_b).",
    "labels": "(N, H, W) uint8: " + ", ".join(f"{v} = {k}" for k, v in LABELS.items()) + ".",
    "phase": "(N,) float32 in [0, 1]: LV contraction, 0 = end-diastole, 1 = end-systole.",
    "lv_volume_ml": "(N,) float32: LV volume by the method of disks on that frame's tracing.",
    "offsets": "(n_videos + 1,) int64: video i is rows offsets[i]:offsets[i + 1].",
    "videos": "per-video table in FileList order: file_name, split, ef, esv, edv, "
    "heart_rate_bpm, fps, n_frames, ed_frame, es_frame (traced frames) and the identity "
    "parameters the video was drawn with (echomotion.phantom.identity.VideoIdentity).",
}


def file_name(seed: int, index: int) -> str:
    """EchoNet-style name (0X + 16 hex digits), deterministic from (seed, index)."""
    digest = hashlib.blake2b(f"echomotion-phantom:{seed}:{index}".encode(), digest_size=8)
    return "0X" + digest.hexdigest().upper()


def assign_splits(n: int, fractions: tuple[float, float, float], seed: int) -> list[str]:
    """TRAIN/VAL/TEST per video: counts by largest remainder (at least one per split
    with a positive fraction), order by a seeded shuffle."""
    exact = np.asarray(fractions) * n
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
    for k in np.flatnonzero((counts == 0) & (np.asarray(fractions) > 0)):
        counts[np.argmax(counts)] -= 1  # every split asked for gets a video
        counts[k] += 1
    labels = np.repeat(np.array(SPLITS), counts)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    return [str(s) for s in labels[rng.permutation(n)]]


def _truth_row(name: str, split: str, video: PhantomVideo, fps: float) -> dict[str, Any]:
    ident = video.ident.row()
    return {
        "file_name": name, "split": split, "ef": video.ef, "esv": video.esv, "edv": video.edv,
        "heart_rate_bpm": ident.pop("heart_rate_bpm"), "fps": float(fps),
        "n_frames": ident.pop("n_frames"), "ed_frame": video.ed_frame,
        "es_frame": video.es_frame, **ident,
    }  # fmt: skip


def _file_list_row(name: str, split: str, video: PhantomVideo, params: PhantomParams) -> list:
    return [
        name, f"{video.ef:.4f}", f"{video.esv:.4f}", f"{video.edv:.4f}", params.size,
        params.size, f"{params.fps:g}", len(video.frames), split,
    ]  # fmt: skip


def _tracing_rows(name: str, video: PhantomVideo) -> list[list]:
    """ES rows then ED rows (EchoNet lists the larger, diastolic, frame last)."""
    rows = []
    for frame in (video.es_frame, video.ed_frame):
        for x1, y1, x2, y2 in video.tracings[frame]:
            rows.append([f"{name}.avi", f"{x1:.4f}", f"{y1:.4f}", f"{x2:.4f}", f"{y2:.4f}", frame])
    return rows


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


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
    size = params.size
    arrays = {
        "displacement": ((2, size, size), "float16"), "labels": ((size, size), "uint8"),
        "phase": ((), "float32"), "lv_volume_ml": ((), "float32"),
    }  # fmt: skip
    attrs = {"schema": TRUTH_SCHEMA, "seed": seed, "params": params.model_dump(mode="json")}
    splits = assign_splits(params.n_videos, params.split_fractions, seed)
    table, file_list, tracings, fold, max_disp = [], [], [], np.inf, 0.0
    with RaggedStoreWriter(out_dir / "truth.zarr", arrays, 2048, 16, attrs) as store:
        for i in tqdm(range(params.n_videos), desc="phantom", unit="video"):
            name, video = file_name(seed, i), simulate_video(params, seed, i)
            write_video(tmp / "Videos" / f"{name}.avi", video.frames, params.fps, params.codec)
            row = _truth_row(name, splits[i], video, params.fps)
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
