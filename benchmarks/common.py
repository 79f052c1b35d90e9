"""Shared set-up of the benchmarks: the default phantom, generated once into a cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from echomotion.config import load_params

REPO = Path(__file__).resolve().parents[1]


def phantom_root(work: Path) -> Path:
    """The default phantom (the pipeline's, if `dvc repro` ran; else generated into work)."""
    root = REPO / "data/phantom/echonet"
    if (root / "FileList.csv").is_file():
        return root
    from echomotion.phantom import generate_phantom

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
