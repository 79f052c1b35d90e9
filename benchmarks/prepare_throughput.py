"""`prepare` throughput vs a bare PyAV decode of the same videos (goal: >= 0.7x).

python benchmarks/prepare_throughput.py
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import av

from common import REPO, best_of, phantom_root, quiet
from echomotion.config import load_params
from echomotion.prepare import prepare_dataset


def bare_decode(root: Path) -> int:
    """Decode every video to grayscale numpy arrays and nothing else."""
    n = 0
    with (root / "FileList.csv").open(newline="") as f:
        names = [row["FileName"] for row in csv.DictReader(f)]
    for name in names:
        with av.open(str(root / "Videos" / f"{name}.avi")) as container:
            for frame in container.decode(video=0):
                frame.to_ndarray(format="gray")
                n += 1
    return n


def main() -> None:
    quiet()
    params = load_params(REPO / "params.yaml").prepare
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        root = phantom_root(work)
        n_videos = sum(1 for _ in (root / "Videos").glob("*.avi"))
        t_decode = best_of(3, lambda: bare_decode(root))
        t_prepare = best_of(
            3, lambda: prepare_dataset(root, params, work / "v.zarr", work / "rejects.csv")
        )
    print(f"videos: {n_videos}")
    print(f"bare PyAV decode : {t_decode:7.3f} s  {n_videos / t_decode:7.1f} videos/s")
    print(f"prepare          : {t_prepare:7.3f} s  {n_videos / t_prepare:7.1f} videos/s")
    print(f"prepare / bare decode throughput: {t_decode / t_prepare:.2f}x (goal >= 0.70x)")


if __name__ == "__main__":
    main()
