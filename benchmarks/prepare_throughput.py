"""`prepare` throughput vs a bare PyAV decode of the same videos (goal: >= 0.7x), and
at EchoNet size: videos/s with several decode processes (``workers``) vs one.

    python benchmarks/prepare_throughput.py                   # the default phantom
    python benchmarks/prepare_throughput.py --videos 10000 --frames 60 --workers 1 2 4

``--videos`` writes an EchoNet-layout root of that many 112x112 videos: ``TEMPLATES``
distinct phantom videos of ``--frames`` frames at ``--fps``, each hard-linked under many
names (decoding costs the same per file whether or not the bytes repeat, and the disk
stays small), with their FileList and VolumeTracings rows.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import av

from common import REPO, best_of, phantom_root, quiet
from echomotion.params import load_params, pipeline_section
from echomotion.tasks.phantom.run import generate_phantom
from echomotion.tasks.prepare.params import PrepareParams
from echomotion.tasks.prepare.run import prepare_dataset

TEMPLATES = 16


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


def _copy_rows(src: Path, dst: Path, copies: int, names: dict[str, list[str]]) -> None:
    """``src`` CSV to ``dst`` with every row repeated once per new name of its FileName."""
    with src.open(newline="") as f, dst.open("w", newline="") as g:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, reader.fieldnames)
        writer.writeheader()
        rows = list(reader)
        for copy in range(copies):
            for row in rows:
                stem = row["FileName"].removesuffix(".avi")
                if copy < len(names[stem]):
                    new = names[stem][copy] + row["FileName"][len(stem) :]
                    writer.writerow({**row, "FileName": new})


def echonet_root(work: Path, n_videos: int, n_frames: int, fps: float) -> Path:
    """EchoNet-layout root of ``n_videos`` videos: hard links to ``TEMPLATES`` phantoms."""
    duration = (n_frames - 0.5) / fps
    phantom = pipeline_section(
        "phantom",
        REPO / "params.yaml",
        n_videos=TEMPLATES,
        fps=fps,
        duration_s=(duration, duration),
    )
    generate_phantom(phantom, seed=0, out_dir=work / "templates")
    src, root = work / "templates/echonet", work / "echonet"
    (root / "Videos").mkdir(parents=True)
    with (src / "FileList.csv").open(newline="") as f:
        stems = [row["FileName"] for row in csv.DictReader(f)]
    names: dict[str, list[str]] = {stem: [] for stem in stems}
    for i in range(n_videos):
        stem = stems[i % len(stems)]
        names[stem].append(f"{stem}_{i:05d}")
        os.link(src / "Videos" / f"{stem}.avi", root / "Videos" / f"{names[stem][-1]}.avi")
    copies = -(-n_videos // len(stems))
    # row order: copy-major, so FileList order interleaves the templates like names above
    _copy_rows(src / "FileList.csv", root / "FileList.csv", copies, names)
    _copy_rows(src / "VolumeTracings.csv", root / "VolumeTracings.csv", copies, names)
    return root


def workers_scaling(args: argparse.Namespace, params: PrepareParams) -> None:
    """prepare_dataset on ``--videos`` videos with each worker count; one run each."""
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        t = time.perf_counter()
        root = echonet_root(work, args.videos, args.frames, args.fps)
        print(f"wrote {args.videos} videos x {args.frames} frames at {args.fps:g} fps, "
              f"112x112 ({TEMPLATES} distinct) in {time.perf_counter() - t:.1f} s")  # fmt: skip
        rates = {}
        for workers in args.workers:
            run = params.model_copy(update={"workers": workers})
            t = time.perf_counter()
            report = prepare_dataset(root, run, work / f"v{workers}.zarr", work / "rejects.csv")
            seconds = time.perf_counter() - t
            rates[workers] = report.rows / seconds
            ratio = rates[workers] / rates[args.workers[0]]
            print(f"workers {workers:2d}: {seconds:7.1f} s  {rates[workers]:7.1f} videos/s  "
                  f"{ratio:4.2f}x of {args.workers[0]} worker(s)  "
                  f"(accepted {report.accepted}, frames stored {report.frames})")  # fmt: skip
    print(f"CPU cores: {os.cpu_count()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, help="EchoNet-size mode: this many videos")
    parser.add_argument("--frames", type=int, default=60, help="frames per video (--videos)")
    parser.add_argument("--fps", type=float, default=50.0, help="source rate (--videos)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    quiet()
    params = load_params(REPO / "params.yaml").prepare
    if args.videos:
        workers_scaling(args, params)
        return
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
