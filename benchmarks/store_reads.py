"""Random 64-frame window reads: the Zarr store vs per-video `torch.save` files.

The reference implementation keeps one .pt file per clip and reads it with
torch.load. Here: a naive read of the sharded store (zarr-python slicing per
window), the store read shard by shard with a small cache (RaggedStore), and the
store bulk-loaded once per process (RaggedStore.load, what the datasets do).
Goal: the in-memory path at least 10x faster than per-video .pt files. Every path ends
with an independent copy of the window (what a batch needs), so no path wins by
returning a view.

    python benchmarks/store_reads.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from common import REPO, best_of, phantom_root, quiet
from echomotion.params import load_params
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.prepare.run import prepare_dataset

WINDOW = 64
READS = 300


def windows(store: RaggedStore, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    ok = np.flatnonzero(store.lengths() >= WINDOW)
    vids = rng.choice(ok, READS)
    return [(int(v), int(rng.integers(0, store.lengths()[v] - WINDOW + 1))) for v in vids]


def main() -> None:
    quiet()
    # the source frame rate keeps videos longer than 64 frames
    params = load_params(REPO / "params.yaml").prepare.model_copy(update={"target_fps": None})
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        prepare_dataset(phantom_root(work), params, work / "v.zarr", work / "rejects.csv")
        store = RaggedStore(work / "v.zarr")
        picks = windows(store)
        pt_dir = work / "pt"
        pt_dir.mkdir()
        for i in range(len(store)):
            torch.save(torch.from_numpy(store.video(i)), pt_dir / f"{i}.pt")

        raw = zarr.open_group(work / "v.zarr", mode="r")["frames"]
        off = store.offsets

        def naive():
            for v, s in picks:
                raw[off[v] + s : off[v] + s + WINDOW]  # a fresh array already

        def per_video_pt():
            for v, s in picks:
                torch.load(pt_dir / f"{v}.pt", weights_only=True)[s : s + WINDOW].clone()

        shard_store = RaggedStore(work / "v.zarr", cache_shards=8)

        def by_shard():
            for v, s in picks:
                shard_store.window(v, s, WINDOW).copy()

        t0 = time.perf_counter()
        memory_store = RaggedStore(work / "v.zarr").load("frames")
        t_load = time.perf_counter() - t0

        def in_memory():
            for v, s in picks:
                memory_store.window(v, s, WINDOW).copy()  # a copy, as a batch needs

        results = {
            "per-video .pt (torch.load)": best_of(3, per_video_pt),
            "zarr, naive slicing": best_of(3, naive),
            "zarr, shard cache": best_of(3, by_shard),
            "zarr, loaded in memory": best_of(3, in_memory),
        }
    base = results["per-video .pt (torch.load)"]
    print(f"{READS} random {WINDOW}-frame windows from {len(store)} videos")
    for name, t in results.items():
        print(f"{name:28s} {1e3 * t / READS:8.3f} ms/read   {base / t:8.1f}x vs .pt")
    print(f"one-time load of the store into memory: {t_load:.3f} s "
          f"(= {t_load / (base / READS):.0f} .pt reads)")  # fmt: skip


if __name__ == "__main__":
    main()
