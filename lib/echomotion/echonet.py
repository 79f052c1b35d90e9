"""Reading and validating the tables of an EchoNet-Dynamic-layout dataset.

``<root>/FileList.csv`` (one row per video) and ``<root>/VolumeTracings.csv`` (LV
tracings of the ED and ES frames). A table that cannot be read as a whole (missing
file, missing column, no rows) raises :class:`TableError` naming the file and column.
A row that cannot be used becomes a :class:`Reject` naming the file, the row (line
number in the CSV, header = line 1) and the reason; every other row is kept.
Labels are optional: an empty EF, ESV or EDV is kept as NaN, a video without
tracings is kept with ED/ES unknown (-1).
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FILE_LIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
VIDEOS = "Videos"
FILE_LIST_COLUMNS = (
    "FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split",
)  # fmt: skip
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = ("TRAIN", "VAL", "TEST")
MISSING = {"", "nan", "na", "n/a", "none", "null"}
# A plain file name: no separators, no parent references, no hidden or odd characters.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")


class TableError(ValueError):
    """A table that cannot be read at all; the message names the file and the column."""


@dataclass(frozen=True)
class Reject:
    file_name: str
    row: int
    reason: str


@dataclass(frozen=True)
class VideoRecord:
    """One usable FileList row. Missing labels are NaN; missing counts are None."""

    file_name: str
    row: int
    split: str
    ef: float
    esv: float
    edv: float
    fps: float | None
    n_frames: int | None


@dataclass(frozen=True)
class TracedFrames:
    """ED/ES frame indices (source frame rate) from the tracings, -1 when unknown."""

    ed: int = -1
    es: int = -1
    note: str = ""


@dataclass
class Tracings:
    by_video: dict[str, TracedFrames] = field(default_factory=dict)
    orphans: int = 0  # rows whose video is not in the FileList


def check_file_name(name: str) -> str:
    """Return the video's base name (``.avi`` stripped) or raise ValueError with the reason."""
    name = name.strip()
    if name.lower().endswith(".avi"):
        name = name[:-4]
    if not name:
        raise ValueError("FileName is empty")
    if "/" in name or "\\" in name:
        raise ValueError(f"FileName {name!r} contains a path separator")
    if ".." in name:
        raise ValueError(f"FileName {name!r} contains '..'")
    if not _FILE_NAME.match(name):
        raise ValueError(f"FileName {name!r} is not a plain file name")
    return name


def _number(text: str, column: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """Parse a numeric cell: NaN when empty, ValueError when not a number or out of range."""
    if text.strip().lower() in MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{column} is not a number: {text!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{column} {value:g} is outside [{lo:g}, {hi:g}]")
    return value


def _read_rows(
    path: Path, columns: tuple[str, ...], allow_empty: bool = False
) -> list[tuple[int, dict[str, str]]]:
    """Read a CSV (BOM, CRLF and extra columns accepted) as (line number, row) pairs."""
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise TableError(f"{path}: missing column(s) {', '.join(missing)} (found {header})")
        reader.fieldnames = header
        rows = [(reader.line_num, {k: (v or "") for k, v in r.items() if k}) for r in reader]
    if not rows and not allow_empty:
        raise TableError(f"{path}: no rows")
    return rows


def read_file_list(root: Path, ef_range: tuple[float, float] = (0.0, 100.0)):
    """Validate ``root/FileList.csv``; return (records, rejects) with one entry per row."""
    path = Path(root) / FILE_LIST
    records: list[VideoRecord] = []
    rejects: list[Reject] = []
    first_seen: dict[str, int] = {}
    for line, row in _read_rows(path, FILE_LIST_COLUMNS):
        raw_name = row["FileName"].strip()
        try:
            record = _record(row, line, ef_range)
            if record.file_name in first_seen:
                first = first_seen[record.file_name]
                raise ValueError(f"duplicate FileName {record.file_name!r} (first at row {first})")
        except ValueError as err:
            rejects.append(Reject(raw_name, line, str(err)))
            continue
        first_seen[record.file_name] = line
        records.append(record)
    return records, rejects


def _record(row: dict[str, str], line: int, ef_range: tuple[float, float]) -> VideoRecord:
    name = check_file_name(row["FileName"])
    split = row["Split"].strip().upper()
    if split not in SPLITS:
        raise ValueError(f"Split {row['Split']!r} is not one of {', '.join(SPLITS)}")
    fps = _number(row["FPS"], "FPS", 1e-3)
    n_frames = _number(row["NumberOfFrames"], "NumberOfFrames", 0)
    return VideoRecord(
        file_name=name,
        row=line,
        split=split,
        ef=_number(row["EF"], "EF", *ef_range),
        esv=_number(row["ESV"], "ESV", 0.0),
        edv=_number(row["EDV"], "EDV", 0.0),
        fps=None if math.isnan(fps) else fps,
        n_frames=None if math.isnan(n_frames) else int(n_frames),
    )


def traced_area(x1, y1, x2, y2) -> float:
    """LV area (pixels^2) of one traced frame: first row = long axis, others = chords.

    The chord endpoints form the LV outline (one side down, the other back up), as in
    EchoNet-Dynamic's own mask construction; the area is the shoelace area of it.
    """
    xs = np.concatenate([x1[1:], x2[1:][::-1]])
    ys = np.concatenate([y1[1:], y2[1:][::-1]])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def read_tracings(root: Path, known: set[str]) -> Tracings:
    """ED (largest traced LV area) and ES (smallest) per video of ``known``.

    A missing VolumeTracings.csv means no video has tracings (the method needs none).
    """
    path = Path(root) / TRACINGS
    result = Tracings()
    if not path.is_file():
        log.warning("%s not found: ED/ES unknown for every video", path)
        return result
    frames: dict[str, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    bad: dict[str, str] = {}
    for line, row in _read_rows(path, TRACING_COLUMNS, allow_empty=True):
        try:
            name = check_file_name(row["FileName"])
        except ValueError:
            result.orphans += 1
            continue
        if name not in known:
            result.orphans += 1
            continue
        try:
            coords = [_number(row[c], c) for c in ("X1", "Y1", "X2", "Y2")]
            frame = _number(row["Frame"], "Frame", 0)
            if any(math.isnan(v) for v in [*coords, frame]):
                raise ValueError("empty coordinate")
        except ValueError as err:
            bad.setdefault(name, f"{path.name} row {line}: {err}")
            continue
        frames[name][int(frame)].append(coords)
    for name in known:
        result.by_video[name] = _ed_es(frames.get(name, {}), bad.get(name))
    return result


def _ed_es(traced: dict[int, list[list[float]]], bad: str | None) -> TracedFrames:
    if bad:
        return TracedFrames(note=f"tracings unusable ({bad})")
    if len(traced) < 2:
        return TracedFrames(note="no tracings" if not traced else "only one traced frame")
    areas = {f: traced_area(*np.asarray(rows, dtype=np.float64).T) for f, rows in traced.items()}
    ed = max(areas, key=areas.get)
    es = min(areas, key=areas.get)
    return TracedFrames(ed=ed, es=es, note="" if ed != es else "traced areas are equal")
