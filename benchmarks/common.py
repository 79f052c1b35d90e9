"""Shared set-up of the benchmarks: the default phantom, generated once into a cache."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from echomotion.params import load_params

REPO = Path(__file__).resolve().parents[1]


def phantom_root(work: Path) -> Path:
    """The default phantom (the pipeline's, if `dvc repro` ran; else generated into work)."""
    root = REPO / "data/phantom/echonet"
    if (root / "FileList.csv").is_file():
        return root
    from echomotion.tasks.phantom.run import generate_phantom

    params = load_params(REPO / "params.yaml")
    if not (work / "phantom/echonet/FileList.csv").is_file():
        generate_phantom(params.phantom, params.shared.seed, work / "phantom")
    return work / "phantom/echonet"


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Best wall time of ``repeats`` calls (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def quiet() -> None:
    logging.basicConfig(level=logging.ERROR)


def device_args(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda`` and ``--preset default|paper`` of the model benchmarks."""
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--preset", choices=["default", "paper"], default="default")


def parse_device_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse; hide CUDA for ``--device cpu`` (before anything touches it), or stop with a
    clear message when ``--device cuda`` finds none; silence library logs."""
    import torch

    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    quiet()
    return args
