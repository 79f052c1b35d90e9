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
from pathlib import Path

import numpy as np

from echomotion.phantom.params import PhantomParams
from echomotion.phantom.simulate import PhantomVideo

log = logging.getLogger(__name__)


FILE_LIST_COLUMNS = (
    "FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split",
)  # fmt: skip


TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")


SPLITS = ("TRAIN", "VAL", "TEST")


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
