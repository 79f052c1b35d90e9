"""Shared fixtures: a tiny EchoNet-Dynamic-layout root written from scratch."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from echomotion.echonet import FILE_LIST_COLUMNS
from echomotion.params import pipeline_section
from echomotion.video import write_video

# `make test` runs the tests on one pytest-xdist worker per core (Makefile): one torch
# thread each then (and in the processes they start), two threads for a plain `pytest` on
# the 2-core default machine.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
os.environ.setdefault("OMP_NUM_THREADS", "1" if WORKER else "2")

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    if WORKER:  # torch may have read its thread count before the line above
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The end-to-end DVC files (marked ``slow``) first, each file's tests kept in order:
    pytest-xdist's ``--dist loadfile`` then starts them at once on separate workers and the
    short files fill in beside them (with them last, one worker ran the longest file alone)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def section(name: str, **updates):
    """Section ``name`` of the repository's params.yaml with ``updates`` applied: the
    sections have no code defaults (params.yaml is the one home of the pipeline's values)."""
    return pipeline_section(name, REPO / "params.yaml", **updates)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models run fastest on one thread, and two threads spin badly on a loaded 2-core box.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def moving_blob_video(n: int, seed: int, size: int = 64) -> np.ndarray:
    """A bright disc that breathes over time on a noisy background: (n, size, size) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for t in range(n):
        r = size * (0.2 + 0.08 * np.sin(2 * np.pi * t / 20))
        disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r**2) * 150
        frames.append(np.clip(disc + rng.normal(40, 10, (size, size)), 0, 255))
    return np.asarray(frames, dtype=np.uint8)


def tracing_rows(name: str, frame: int, half_width: float) -> list[list]:
    """One traced frame: long axis, then 3 chords of the given half width."""
    rows = [[f"{name}.avi", 32, 10, 32, 54, frame]]
    for y in (20, 30, 40):
        rows.append([f"{name}.avi", 32 - half_width, y, 32 + half_width, y, frame])
    return rows


class EchoNetRoot:
    """Builder of a small EchoNet-Dynamic root for tests."""

    def __init__(self, root: Path):
        self.root = root
        (root / "Videos").mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, str]] = []
        self.tracings: list[list] = []

    def add(self, name: str, n_frames: int = 40, fps: float = 50.0, write: bool = True, **cells):
        row = {
            "FileName": name, "EF": "55.0", "ESV": "30.0", "EDV": "67.0", "FrameHeight": "64",
            "FrameWidth": "64", "FPS": str(fps), "NumberOfFrames": str(n_frames), "Split": "TRAIN",
        }  # fmt: skip
        row.update({k: str(v) for k, v in cells.items()})
        self.rows.append(row)
        if write:
            video = moving_blob_video(n_frames, seed=len(self.rows))
            write_video(self.root / "Videos" / f"{name}.avi", video, fps)
        return self

    def trace(self, name: str, ed: int, es: int):
        self.tracings += tracing_rows(name, ed, 12) + tracing_rows(name, es, 7)
        return self

    def write(self, columns=FILE_LIST_COLUMNS, newline="\n", bom=False) -> Path:
        text = ",".join(columns) + newline
        for row in self.rows:
            text += ",".join(row.get(c, "") for c in columns) + newline
        (self.root / "FileList.csv").write_text(("\ufeff" if bom else "") + text, newline="")
        with (self.root / "VolumeTracings.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
            writer.writerows(self.tracings)
        return self.root


@pytest.fixture
def echonet_root(tmp_path) -> EchoNetRoot:
    return EchoNetRoot(tmp_path / "echonet")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict[str, Path]:
    """A small phantom (8 videos, 1.8 s each, 64x64) prepared at 25 fps: the input of
    every stage test. Returns paths: ``phantom`` (dir), ``truth`` (truth.zarr),
    ``root`` (EchoNet layout) and ``videos`` (the prepared store)."""
    from echomotion.tasks.phantom.run import generate_phantom
    from echomotion.tasks.prepare.run import prepare_dataset

    work = tmp_path_factory.mktemp("tiny")
    phantom = section("phantom", n_videos=8, duration_s=(1.8, 1.8), size=112)
    generate_phantom(phantom, seed=7, out_dir=work / "phantom")
    prepare = section("prepare", target_fps=25.0, size=64, min_frames=16, shard_frames=256)
    root = work / "phantom" / "echonet"
    prepare_dataset(root, prepare, work / "videos.zarr", work / "rejects.csv")
    return {
        "phantom": work / "phantom",
        "truth": work / "phantom" / "truth.zarr",
        "root": root,
        "videos": work / "videos.zarr",
    }
