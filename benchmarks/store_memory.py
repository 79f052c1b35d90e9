"""Window datasets at EchoNet size: memory per DataLoader worker and windows/s.

Today's loader reads the whole frame array into every worker (``RaggedStore.load`` of an
array under ``MAP_ABOVE_BYTES``); the mapped one decompresses it once per machine into a
``.npy`` file and memory-maps it, so workers share the page cache. Per worker: peak
private memory (Private_Dirty of /proc/<pid>/smaps_rollup, sampled while it runs: memory
only that worker holds and the kernel cannot drop, what an extra worker costs) beside
its peak Rss (which also counts clean file pages, shared and reclaimable).
Goals: private memory per extra worker < 10 % of the decompressed store; mapped
windows/s >= 0.8x in memory.

Each worker of the in-memory loader holds a whole copy, so it runs on a store of
``--memory-videos`` videos; the mapped loader runs on that store and on the full one.

    python benchmarks/store_memory.py                       # 10,000 videos x 60 frames
    python benchmarks/store_memory.py --videos 500 --memory-videos 200
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from torch.utils.data import DataLoader, RandomSampler

import echomotion.stores.ragged
from common import quiet
from echomotion.data import VideoWindowDataset
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter

SIZE = 112
WINDOW = 16
BATCH = 32


def write_store(path: Path, n_videos: int, n_frames: int, seed: int = 0) -> float:
    """Synthetic echo-like frames: a smooth random image per video drifting over time,
    plus noise, so zstd compresses them about as much as real frames. Returns seconds."""
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 8, (n_frames * 4, SIZE, SIZE), dtype=np.uint8)  # reused pool
    spec = {"frames": ((SIZE, SIZE), "uint8")}
    with RaggedStoreWriter(path, spec, attrs={"fps": 25.0}) as w:
        for i in range(n_videos):
            coarse = rng.integers(0, 200, (SIZE // 8, SIZE // 8), dtype=np.uint8)
            base = np.kron(coarse, np.ones((8, 8), dtype=np.uint8))  # (H, W)
            drift = np.stack([np.roll(base, k, axis=1) for k in range(n_frames)])  # (T, H, W)
            start = int(rng.integers(0, len(noise) - n_frames))
            frames = drift + noise[start : start + n_frames]
            w.append({"frames": frames}, file_name=f"v{i}", split="TRAIN", ef=50.0)
    return time.perf_counter() - t


def private_and_rss(pid: int) -> tuple[int, int]:
    """(Private_Dirty, Rss) of a process in bytes."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return fields["Private_Dirty"], fields["Rss"]


class PeakSampler(threading.Thread):
    """Peak (private, rss) of each DataLoader worker (or of this process, without
    workers: its growth over the run) sampled every ``every`` seconds."""

    def __init__(self, workers: bool, every: float = 0.25):
        super().__init__(daemon=True)
        self.workers, self.every = workers, every
        self.me = psutil.Process()
        self.base = (0, 0) if workers else private_and_rss(self.me.pid)
        self.peaks: dict[int, tuple[int, int]] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        pids = [c.pid for c in self.me.children()] if self.workers else [self.me.pid]
        for pid in pids:
            try:
                priv, rss = private_and_rss(pid)
            except (FileNotFoundError, ProcessLookupError, KeyError):
                continue
            old = self.peaks.get(pid, (0, 0))
            self.peaks[pid] = (max(old[0], priv - self.base[0]), max(old[1], rss - self.base[1]))

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.sample()

    def result(self) -> tuple[float, float]:
        """Mean over workers of the peak private and peak Rss bytes."""
        self.stop.set()
        self.join()
        if not self.peaks:
            return float("nan"), float("nan")
        priv, rss = zip(*self.peaks.values(), strict=True)
        return float(np.mean(priv)), float(np.mean(rss))


def run_loader(path: Path, mapped: bool, workers: int, n_windows: int) -> dict[str, float]:
    """Random 16-frame windows through the training dataset; seconds, windows/s, memory."""
    echomotion.stores.ragged.MAP_ABOVE_BYTES = 0 if mapped else 1 << 62  # workers fork after this
    ds = VideoWindowDataset(path, WINDOW, seed=0)
    sampler = RandomSampler(ds, replacement=True, num_samples=n_windows)
    loader = DataLoader(ds, batch_size=BATCH, sampler=sampler, num_workers=workers)
    sampler_thread = PeakSampler(workers > 0)
    sampler_thread.start()
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)  # every worker loads or maps the store before its first batch
    t1 = time.perf_counter()
    n = BATCH
    for i, batch in enumerate(it):
        n += len(batch["frames"])
        if i % 8 == 0:  # workers exit with the last batch: sample here too
            sampler_thread.sample()
    t2 = time.perf_counter()
    sampler_thread.sample()
    priv, rss = sampler_thread.result()
    return {"first": t1 - t0, "rate": (n - BATCH) / (t2 - t1), "private": priv, "rss": rss}


def report(label: str, r: dict[str, float], store_bytes: int, base_rate: float) -> None:
    gb = 1 << 30
    print(
        f"{label:34s} first batch {r['first']:6.2f} s  {r['rate']:7.0f} windows/s "
        f"({r['rate'] / base_rate:4.2f}x)  private {r['private'] / gb:6.3f} GiB "
        f"({100 * r['private'] / store_bytes:5.1f} % of store)  rss {r['rss'] / gb:6.3f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--memory-videos", type=int, default=1000, help="in-memory baseline")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--windows", type=int, default=4096)
    args = parser.parse_args()
    quiet()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        os.environ["ECHOMOTION_CACHE"] = str(work / "cache")
        small, full = work / "small.zarr", work / "full.zarr"
        n_small = min(args.memory_videos, args.videos)
        write_store(small, n_small, args.frames)
        t_write = write_store(full, args.videos, args.frames)
        sizes = {p: RaggedStore(p).array("frames").nbytes for p in (small, full)}
        on_disk = sum(f.stat().st_size for f in full.rglob("*") if f.is_file())
        t = time.perf_counter()
        RaggedStore(full).map("frames")
        t_map = time.perf_counter() - t
        RaggedStore(small).map("frames")
        print(
            f"store: {args.videos} videos x {args.frames} frames {SIZE}x{SIZE} uint8, "
            f"{sizes[full] / (1 << 30):.2f} GiB decompressed, {on_disk / (1 << 30):.2f} GiB "
            f"on disk, written in {t_write:.1f} s; decompressed into the cache in {t_map:.1f} s"
        )
        print(f"in-memory baseline on the first {n_small} videos ({sizes[small] >> 20} MiB)")
        for workers in args.workers:
            base = run_loader(small, False, workers, args.windows)
            report(f"{workers} workers, in memory ({n_small})", base, sizes[small], base["rate"])
            mapped = run_loader(small, True, workers, args.windows)
            report(f"{workers} workers, mapped ({n_small})", mapped, sizes[small], base["rate"])
            big = run_loader(full, True, workers, args.windows)
            report(f"{workers} workers, mapped ({args.videos})", big, sizes[full], base["rate"])


if __name__ == "__main__":
    main()
