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
from .store import RaggedStoreWriter
from .video import VideoReadError, read_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareReport:
    rows: int
    accepted: int
    rejected: int
    frames: int
    without_ef: int
    without_ed_es: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def resample_indices(n: int, fps: float, target_fps: float | None) -> np.ndarray:
    """Source frame index of each output frame when resampling ``n`` frames to ``target_fps``."""
    if target_fps is None or math.isclose(fps, target_fps):
        return np.arange(n)
    n_out = math.floor((n - 1) * target_fps / fps + 1e-9) + 1
    return np.minimum(np.round(np.arange(n_out) * fps / target_fps).astype(np.int64), n - 1)


def map_frame(index: int, source: np.ndarray) -> int:
    """Output index whose source frame is nearest to ``index`` (-1 stays unknown)."""
    if index < 0:
        return -1
    return int(np.argmin(np.abs(source - index)))


def _load(
    root: Path, record: VideoRecord, params: PrepareParams
) -> tuple[np.ndarray, float, np.ndarray]:
    """Decode, check and resample one video; return (frames, source fps, source indices)."""
    video = read_video(root / VIDEOS / f"{record.file_name}.avi", size=(params.size, params.size))
    n = len(video.frames)
    if record.n_frames is not None and n < record.n_frames:
        raise VideoReadError(f"truncated: FileList declares {record.n_frames} frames, decoded {n}")
    fps = record.fps or video.fps
    if not fps:
        raise VideoReadError("frame rate unknown (no FPS in FileList nor in the file)")
    source = resample_indices(n, fps, params.target_fps)
    if len(source) < params.min_frames:
        raise VideoReadError(
            f"too few frames: {len(source)} after resampling to {params.target_fps} fps "
            f"(minimum {params.min_frames})"
        )
    return video.frames[source], fps, source


def _row(record: VideoRecord, traced: TracedFrames, fps: float, source: np.ndarray, target):
    return {
        "file_name": record.file_name,
        "split": record.split,
        "ef": record.ef,
        "esv": record.esv,
        "edv": record.edv,
        "fps": float(target or fps),
        "source_fps": float(fps),
        "n_frames": len(source),
        "ed": map_frame(traced.ed, source),
        "es": map_frame(traced.es, source),
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
            row = _row(record, traced, fps, source, params.target_fps)
            writer.append({"frames": frames}, **row)
            accepted += 1
            without_ef += math.isnan(record.ef)
            without_ed_es += row["ed"] < 0 or row["es"] < 0
        n_frames = writer.offsets[-1]
    write_rejects(rejects, rejects_path)
    report = PrepareReport(
        rows=accepted + len(rejects),
        accepted=accepted,
        rejected=len(rejects),
        frames=int(n_frames),
        without_ef=without_ef,
        without_ed_es=without_ed_es,
    )
    log.info("prepare: %s", report.as_dict())
    return report


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
    "videos/source_row": "int64, line of the video in FileList.csv",
}
