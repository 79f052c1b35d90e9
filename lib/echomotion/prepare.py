"""The ``prepare`` stage: any EchoNet-Dynamic-layout root -> one sharded video store.

Steps: 1. validate FileList.csv (bad rows become rejects), 2. read VolumeTracings.csv
for ED/ES, 3. decode each video with PyAV to grayscale at the target size, 4. resample
to the target frame rate, 5. append it to the store, 6. write the rejects file.
accepted + rejected = rows of FileList.csv, always.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import PrepareParams
from .echonet import VIDEOS, Reject, TracedFrames, VideoRecord, read_file_list, read_tracings
from .edes import detect_ed_es, mean_error, nearest_error
from .store import RaggedStoreWriter
from .video import VideoReadError, read_video, resample_indices

__all__ = ["PrepareReport", "map_frame", "prepare_dataset", "resample_indices"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareReport:
    rows: int
    accepted: int
    rejected: int
    frames: int
    without_ef: int
    without_ed_es: int
    ed_es_from_tracings: int
    ed_es_from_detector: int
    detector_vs_tracings_ed_frames: float  # mean distance, traced ED -> nearest detected ED
    detector_vs_tracings_es_frames: float

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def map_frame(index: int, source: np.ndarray) -> int:
    """Output index whose source frame is nearest to ``index`` (-1 stays unknown)."""
    if index < 0:
        return -1
    return int(np.argmin(np.abs(source - index)))


def _load(
    root: Path, record: VideoRecord, params: PrepareParams
) -> tuple[np.ndarray, float, np.ndarray]:
    """Decode, check and resample one video; return (frames, source fps, source indices)."""
    video = read_video(
        root / VIDEOS / f"{record.file_name}.avi",
        size=(params.size, params.size),
        target_fps=params.target_fps,
        fps=record.fps,
    )
    n = video.decoded_frames
    if record.n_frames is not None and n < record.n_frames:
        raise VideoReadError(f"truncated: FileList declares {record.n_frames} frames, decoded {n}")
    fps, source = video.fps, video.source_indices
    if not fps:
        raise VideoReadError("frame rate unknown (no FPS in FileList nor in the file)")
    if len(source) < params.min_frames:
        raise VideoReadError(
            f"too few frames: {len(source)} after resampling to {params.target_fps} fps "
            f"(minimum {params.min_frames})"
        )
    return video.frames, fps, source


def _ed_es(frames: np.ndarray, fps: float, traced: TracedFrames, source: np.ndarray, mode: str):
    """(ed, es, source of them, detector result) for one resampled video."""
    detected = detect_ed_es(frames, fps)
    ed, es = map_frame(traced.ed, source), map_frame(traced.es, source)
    if mode == "tracings" and ed >= 0 and es >= 0 and ed != es:
        return ed, es, "tracings", detected
    if detected.ed >= 0:
        return detected.ed, detected.es, "detector", detected
    return -1, -1, "none", detected


def _row(record: VideoRecord, ed_es: tuple, fps: float, source: np.ndarray, target):
    ed, es, origin, detected = ed_es
    return {
        "file_name": record.file_name,
        "split": record.split,
        "ef": record.ef,
        "esv": record.esv,
        "edv": record.edv,
        "fps": float(target or fps),
        "source_fps": float(fps),
        "n_frames": len(source),
        "ed": ed,
        "es": es,
        "ed_es_source": origin,
        "ed_auto": detected.ed,
        "es_auto": detected.es,
        "source_row": record.row,
    }


def prepare_dataset(
    root: str | Path, params: PrepareParams, store_path: str | Path, rejects_path: str | Path
) -> PrepareReport:
    """Validate, decode and store every usable video of ``root``; list the rest."""
    root = Path(root)
    records, rejects = read_file_list(root, params.ef_range)
    tracings = read_tracings(root, {r.file_name for r in records})
    accepted = without_ef = without_ed_es = 0
    origins: dict[str, int] = {"tracings": 0, "detector": 0, "none": 0}
    agreement: list[tuple[float, float]] = []
    frame_shape = ((params.size, params.size), "uint8")
    with RaggedStoreWriter(
        store_path, {"frames": frame_shape}, params.shard_frames, params.chunk_frames,
        attrs={"description": STORE_SCHEMA, "source_root": str(root)},
    ) as writer:  # fmt: skip
        for record in tqdm(records, desc="prepare", unit="video"):
            try:
                frames, fps, source = _load(root, record, params)
            except VideoReadError as err:
                reason = str(err).replace(str(root / VIDEOS) + "/", "")
                rejects.append(Reject(record.file_name, record.row, reason))
                continue
            traced = tracings.by_video.get(record.file_name, TracedFrames())
            stored_fps = params.target_fps or fps
            ed_es = _ed_es(frames, stored_fps, traced, source, params.ed_es)
            row = _row(record, ed_es, fps, source, params.target_fps)
            writer.append({"frames": frames}, **row)
            accepted += 1
            without_ef += math.isnan(record.ef)
            without_ed_es += row["ed"] < 0 or row["es"] < 0
            origins[row["ed_es_source"]] += 1
            if traced.ed >= 0 and traced.es >= 0:
                agreement.append(_agreement(traced, source, ed_es[3]))
        n_frames = writer.offsets[-1]
    write_rejects(rejects, rejects_path)
    report = PrepareReport(
        rows=accepted + len(rejects),
        accepted=accepted,
        rejected=len(rejects),
        frames=int(n_frames),
        without_ef=without_ef,
        without_ed_es=without_ed_es,
        ed_es_from_tracings=origins["tracings"],
        ed_es_from_detector=origins["detector"],
        detector_vs_tracings_ed_frames=mean_error([a[0] for a in agreement]),
        detector_vs_tracings_es_frames=mean_error([a[1] for a in agreement]),
    )
    log.info("prepare: %s", report.as_dict())
    return report


def _agreement(traced: TracedFrames, source: np.ndarray, detected) -> tuple[float, float]:
    """Frames from each traced ED / ES to the nearest ED / ES the detector found (any cycle:
    a tracing marks one cycle of several)."""
    ed = nearest_error(np.array([map_frame(traced.ed, source)]), detected.ed_all)
    es = nearest_error(np.array([map_frame(traced.es, source)]), detected.es_all)
    return (float(ed[0]) if ed.size else math.nan, float(es[0]) if es.size else math.nan)


def write_rejects(rejects: list[Reject], path: str | Path) -> None:
    """CSV of every unusable row: FileName, row (line in FileList.csv), reason."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["FileName", "row", "reason"])
        for r in sorted(rejects, key=lambda r: r.row):
            writer.writerow([r.file_name, r.row, r.reason])
    for r in rejects:
        log.warning("rejected %s (row %d): %s", r.file_name or "<empty>", r.row, r.reason)


STORE_SCHEMA = {
    "frames": "(N_total, size, size) uint8 grayscale, all videos concatenated in table order",
    "offsets": "(n_videos + 1,) int64; video i = frames[offsets[i]:offsets[i+1]]",
    "videos/file_name": "str, FileName without extension",
    "videos/split": "str, TRAIN / VAL / TEST",
    "videos/ef, esv, edv": "float64, NaN when the FileList has no value",
    "videos/fps": "float64, frame rate of the stored frames",
    "videos/source_fps": "float64, frame rate of the source video",
    "videos/n_frames": "int64, stored frames of the video",
    "videos/ed, es": "int64, ED / ES index into the stored frames, -1 when unknown",
    "videos/ed_es_source": "str, where ed/es come from: tracings, detector or none",
    "videos/ed_auto, es_auto": "int64, the label-free detector's ED / ES (-1: none found)",
    "videos/source_row": "int64, line of the video in FileList.csv",
}
