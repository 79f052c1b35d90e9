"""`dvc status` on the default pipeline with nothing changed (goal: <= 3 s).

Run after `make repro`:  python benchmarks/dvc_status.py

At EchoNet size: a store of ``--videos`` videos x ``--frames`` frames (112x112, written
like benchmarks/store_memory.py does) committed as the output of a ``prepare`` stage in
a scratch git + DVC repo, then a no-op `dvc status` there (best of 3):

    python benchmarks/dvc_status.py --videos 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, best_of

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}


def scratch_repo(work: Path, dvc: str, n_videos: int, n_frames: int) -> Path:
    """git + DVC repo whose stage ``prepare`` has the store as its committed output.
    The cache hard-links the shards, so the store is on disk once."""
    from store_memory import write_store  # imports torch: only in this mode

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, env=ENV)

    sh("git", "init", "-q")
    sh(dvc, "init", "-q")
    sh(dvc, "config", "cache.type", "hardlink")
    (work / "make_store.py").write_text(
        f"# write_store(n_videos={n_videos}, n_frames={n_frames})\n"
    )
    seconds = write_store(work / "data/videos.zarr", n_videos, n_frames)
    print(f"store: {n_videos} videos x {n_frames} frames written in {seconds:.1f} s")
    sh(dvc, "stage", "add", "-q", "-n", "prepare", "-d", "make_store.py",
       "-o", "data/videos.zarr", "python make_store.py")  # fmt: skip
    t = time.perf_counter()
    sh(dvc, "commit", "-q", "-f", "prepare")  # hash and cache the output, as repro would
    print(f"dvc commit (first hash of the store): {time.perf_counter() - t:.1f} s")
    return work


def store_status(dvc: str, n_videos: int, n_frames: int) -> None:
    """No-op `dvc status` in a scratch repo holding an EchoNet-size store."""
    with tempfile.TemporaryDirectory() as work:
        repo = scratch_repo(Path(work), dvc, n_videos, n_frames)
        store = repo / "data/videos.zarr"
        files = [p for p in store.rglob("*") if p.is_file()]
        out = ""

        def status() -> None:
            nonlocal out
            out = subprocess.run(
                [dvc, "status"], cwd=repo, capture_output=True, text=True, env=ENV
            ).stdout

        best = best_of(3, status)
        size = sum(p.stat().st_size for p in files) / (1 << 30)
        print(f"dvc status: {out.strip()!r}")
        print(f"store files: {len(files)}, {size:.2f} GiB on disk")
        print(f"dvc status best of 3: {best:.2f} s (goal <= 3 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, help="scratch repo with a store of N videos")
    parser.add_argument("--frames", type=int, default=60, help="frames per video (--videos)")
    args = parser.parse_args()
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    if args.videos:
        store_status(dvc, args.videos, args.frames)
        return
    times, out = [], ""
    for _ in range(3):
        t = time.perf_counter()
        out = subprocess.run([dvc, "status"], cwd=REPO, capture_output=True, text=True).stdout
        times.append(time.perf_counter() - t)
    files = (
        sum(1 for p in (REPO / "data").rglob("*") if p.is_file()) if (REPO / "data").exists() else 0
    )
    print(f"dvc status: {out.strip()!r}")
    print(f"tracked files under data/: {files}")
    print(f"dvc status median {statistics.median(times):.2f} s over 3 runs (goal <= 3 s)")


if __name__ == "__main__":
    main()
