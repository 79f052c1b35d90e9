"""Reading the synthetic dataset written by the ``sample`` stage (EchoNet-Dynamic layout).

``FileList.csv`` has the EchoNet columns plus ``MotionSource`` (FileName of the real video
whose motion vector drove the sample), ``AppearanceSource``, ``Mode`` (transfer / self)
and ``Synthetic``; optional ``ED`` / ``ES`` give the generated video's frames matching the
driving video's ED/ES, optional ``MotionStart`` the driving video's frame the generated
video's first frame corresponds to (absent: 0, the first). A row whose video is missing
or unreadable is skipped with a warning; a table without the required columns raises
:class:`TableError`.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echomotion.echonet import FILE_LIST, VIDEOS, TableError, check_file_name
from echomotion.evaluation.videos import VideoSet, resize_frames
from echomotion.video import VideoReadError, read_video

log = logging.getLogger(__name__)

REQUIRED = ("FileName", "MotionSource", "AppearanceSource", "Mode")
_FALSE = {"0", "false", "no", "n"}


@dataclass(frozen=True)
class SyntheticRecord:
    """One synthetic video; ``ed``/``es`` and ``n_frames`` are -1, ``fps`` NaN and
    ``motion_start`` 0 when not given."""

    file_name: str
    motion_source: str
    appearance_source: str
    mode: str
    fps: float
    ed: int
    es: int
    motion_start: int = 0
    n_frames: int = -1

    def rate(self, default: float) -> float:
        """The video's frame rate; ``default`` (its driver's) when the table has none."""
        return self.fps if math.isfinite(self.fps) else default


def _int(text: str | None) -> int:
    try:
        return int(float(text)) if text not in (None, "") else -1
    except ValueError:
        return -1


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_synthetic_table(root: Path) -> list[SyntheticRecord]:
    """The synthetic rows of ``root/FileList.csv`` (a row whose Synthetic cell says false,
    0 or no is a real video and left out)."""
    path = Path(root) / FILE_LIST
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise TableError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = [r for r in reader if (r.get("Synthetic") or "").strip().lower() not in _FALSE]
    return [
        SyntheticRecord(
            file_name=check_file_name(r["FileName"]),
            motion_source=check_file_name(r["MotionSource"]),
            appearance_source=r["AppearanceSource"].strip().removesuffix(".avi"),
            mode=r["Mode"].strip(),
            fps=_float(r.get("FPS")),
            ed=_int(r.get("ED")),
            es=_int(r.get("ES")),
            motion_start=max(_int(r.get("MotionStart")), 0),
            n_frames=_int(r.get("NumberOfFrames")),
        )
        for r in rows
    ]


def load_synthetic(root: Path, size: tuple[int, int]) -> tuple[list[SyntheticRecord], VideoSet]:
    """The readable synthetic videos, decoded and resized to ``size`` = (H, W), with their
    records (same order)."""
    records, videos = [], []
    for record in read_synthetic_table(root):
        try:
            frames = read_video(Path(root) / VIDEOS / f"{record.file_name}.avi").frames
        except VideoReadError as err:
            log.warning("skipping synthetic video: %s", err)
            continue
        records.append(record)
        videos.append(resize_frames(frames, size))
    if not records:
        raise TableError(f"{root}: no readable synthetic video")
    return records, VideoSet.from_arrays([r.file_name for r in records], videos)


def source_index(names: np.ndarray, wanted: list[str]) -> np.ndarray:
    """Position of each ``wanted`` name in ``names`` (-1 when absent)."""
    lookup = {str(n): i for i, n in enumerate(names)}
    return np.array([lookup.get(w, -1) for w in wanted], dtype=np.int64)
