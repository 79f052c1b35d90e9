"""Ragged, sharded Zarr v3 stores: one per stage output.

Videos differ in length, so every frame-level array concatenates all videos along
axis 0 and ``offsets`` (n_videos + 1, int64) says where each video starts: video ``i``
is ``array[offsets[i]:offsets[i + 1]]``. Per-video columns live in the ``videos/``
group, one 1-D array per column, in the same order. Frame arrays are sharded along
axis 0 so a store is tens of files, not one file per chunk (DVC hashes every file),
and compressed with Blosc/zstd.

A store is written under a temporary name and renamed when complete, so an
interrupted stage never leaves a half store that a later stage could read. A store may
hold another complete store as a subfolder (the prepared videos at their source rate:
``videos.zarr/native``, :data:`NATIVE`); readers of the outer store never see it.

Arrays too large to copy into every DataLoader worker and rank (EchoNet-size frames)
are decompressed once per machine into a ``.npy`` file of the cache folder
(:func:`cache_root`) and memory-mapped, so every process reads the same page cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

log = logging.getLogger(__name__)


FORMAT_VERSION = 1


# load() maps arrays larger than this instead of copying them into each process
# (the default pipeline's stores are a few hundred MB; EchoNet's frames are ~11 GB)
MAP_ABOVE_BYTES = 1 << 30


def _compressor(dtype: str) -> BloscCodec:
    """zstd; byte-shuffle multi-byte values, leave uint8 images unshuffled (measured:
    smaller and 2.4x faster to write than bitshuffle on echo frames)."""
    if np.dtype(dtype).itemsize == 1:
        return BloscCodec(cname="zstd", clevel=1, shuffle="noshuffle")
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def _column_array(values: list[Any]) -> np.ndarray:
    """Turn a list of per-video values into a typed 1-D array."""
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=object)
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=np.float64)


class RaggedStoreWriter:
    """Write a ragged store video by video; use as a context manager.

    ``frame_arrays`` maps an array name to (per-frame shape, dtype). Every call to
    :meth:`append` gives all of them for one video (same length) and that video's
    table row. Data is flushed shard by shard, so memory stays at about one shard.
    """

    def __init__(
        self,
        path: str | Path,
        frame_arrays: Mapping[str, tuple[tuple[int, ...], str]],
        shard_frames: int = 2048,
        chunk_frames: int = 16,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        if shard_frames % chunk_frames:
            raise ValueError(f"shard_frames {shard_frames} is not a multiple of {chunk_frames}")
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.frame_arrays = dict(frame_arrays)
        self.shard_frames = shard_frames
        self.chunk_frames = chunk_frames
        self.attrs = dict(attrs or {})
        self.rows: list[dict[str, Any]] = []
        self.offsets = [0]
        self._buffers: dict[str, list[np.ndarray]] = {k: [] for k in self.frame_arrays}
        self._buffered = 0
        self._written = 0
        # compression runs in a thread (it releases the GIL) while the caller decodes
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future | None = None

    def __enter__(self) -> RaggedStoreWriter:
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(self.tmp, mode="w", zarr_format=3)
        self.arrays = {
            name: self.group.create_array(
                name,
                shape=(0, *shape),
                chunks=(self.chunk_frames, *shape),
                shards=(self.shard_frames, *shape),
                dtype=dtype,
                compressors=_compressor(dtype),
                fill_value=0,
            )
            for name, (shape, dtype) in self.frame_arrays.items()
        }
        return self

    def append(self, arrays: Mapping[str, np.ndarray], **row: Any) -> None:
        """Add one video: every frame array (same length along axis 0) and its row."""
        if set(arrays) != set(self.frame_arrays):
            raise ValueError(f"expected arrays {sorted(self.frame_arrays)}, got {sorted(arrays)}")
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays of one video differ in length: {lengths}")
        if self.rows and set(row) != set(self.rows[0]):
            raise ValueError(f"row keys {sorted(row)} differ from {sorted(self.rows[0])}")
        for name, a in arrays.items():
            shape, dtype = self.frame_arrays[name]
            if tuple(a.shape[1:]) != tuple(shape):
                raise ValueError(f"{name}: frame shape {a.shape[1:]} != declared {shape}")
            self._buffers[name].append(np.asarray(a, dtype=dtype))
        n = next(iter(lengths.values()))
        self._buffered += n
        self.offsets.append(self.offsets[-1] + n)
        self.rows.append(row)
        if self._buffered >= self.shard_frames:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write whole shards from the buffers (everything when ``final``) in the
        background; at most one write is in flight."""
        whole = (self._buffered // self.shard_frames) * self.shard_frames
        n_out = self._buffered if final else whole
        if n_out == 0:
            return
        blocks = {}
        for name, parts in self._buffers.items():
            block = np.concatenate(parts)
            blocks[name] = block[:n_out]
            self._buffers[name] = [block[n_out:]] if n_out < len(block) else []
        self._wait()
        self._pending = self._pool.submit(self._write, blocks, self._written, n_out)
        self._written += n_out
        self._buffered -= n_out

    def _write(self, blocks: dict[str, np.ndarray], start: int, n: int) -> None:
        for name, block in blocks.items():
            arr = self.arrays[name]
            arr.resize((start + n, *arr.shape[1:]))
            arr[start : start + n] = block

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises a failed write here
            self._pending = None

    def __exit__(self, exc_type, exc, tb) -> None:
        complete = False
        try:
            if exc_type is None:
                self._flush(final=True)
            self._wait()
            if exc_type is None:
                self._finish()
                complete = True
        finally:
            self._pool.shutdown(wait=True)
            if not complete:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _finish(self) -> None:
        offsets = np.asarray(self.offsets, dtype=np.int64)
        self.group.create_array("offsets", data=offsets, chunks=(max(len(offsets), 1),))
        table = self.group.create_group("videos")
        for key in self.rows[0] if self.rows else []:
            col = _column_array([r[key] for r in self.rows])
            dtype = str if col.dtype == object else col.dtype
            arr = table.create_array(key, shape=col.shape, dtype=dtype, chunks=(max(len(col), 1),))
            arr[:] = col
        self.group.attrs.update(
            {"format_version": FORMAT_VERSION, "n_videos": len(self.rows), **self.attrs}
        )
        old = self.path.with_name(f".{self.path.name}.old")
        if self.path.exists():  # swap by renames: the path is never missing for long
            shutil.rmtree(old, ignore_errors=True)
            self.path.rename(old)
        self.tmp.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)
        log.info("wrote %s: %d videos, %d frames", self.path, len(self.rows), offsets[-1])


def _plain(column: np.ndarray) -> np.ndarray:
    """Variable-length strings come back as numpy StringDType; use plain '<U' arrays."""
    return np.array(column.tolist(), dtype=str) if column.dtype.kind == "T" else column


def cache_root() -> Path:
    """Folder of decompressed arrays: ``$ECHOMOTION_CACHE``, else one in the temp dir."""
    return Path(os.environ.get("ECHOMOTION_CACHE") or Path(tempfile.gettempdir()) / "echomotion")


class MappedArray(np.ndarray):
    """A copy-on-write view of a cached ``.npy`` file that pickles as its
    file and position, so a DataLoader worker or another process maps the same file
    instead of receiving a copy of the data. Copies made from it pickle as usual."""

    _source: tuple[str, mmap.mmap, int] | None = None  # (file, its mapping, first byte address)

    def __array_finalize__(self, obj: Any) -> None:
        self._source = getattr(obj, "_source", None)

    def __reduce__(self):
        if self._source is None or _root_buffer(self) is not self._source[1]:
            return np.asarray(self).copy().__reduce__()  # a copy, not a view of the file
        start = self.__array_interface__["data"][0] - self._source[2]
        return _open_view, (self._source[0], start, self.shape, self.strides)


def _root_buffer(a: np.ndarray) -> Any:
    """The object at the end of ``a``'s chain of bases (an mmap for views of a file)."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


def open_mapped(path: str | Path) -> MappedArray:
    """Map a ``.npy`` file copy-on-write: pages are shared with every process mapping it,
    and a write stays private to the process that makes it."""
    mem = np.load(path, mmap_mode="c")
    root = mem.view(MappedArray)
    root._source = (str(path), _root_buffer(mem), mem.__array_interface__["data"][0])
    return root


def _open_view(path: str, start: int, shape: tuple[int, ...], strides: tuple[int, ...]):
    root = open_mapped(path)
    flat = root.reshape(-1).view(np.uint8)  # the file's data as bytes, still a view of it
    view = np.ndarray.__new__(MappedArray, shape, root.dtype, buffer=flat[start:], strides=strides)
    view._source = root._source
    return view


def _content_key(array_dir: Path) -> str:
    """Identity of an array's stored content: its metadata and every chunk file's size and
    mtime (a rewritten store replaces the files, so the key changes with the content)."""
    h = hashlib.sha256((array_dir / "zarr.json").read_bytes())
    for f in sorted(array_dir.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(array_dir)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decompress_to(array: zarr.Array, path: Path) -> None:
    """Write ``array`` to the ``.npy`` file ``path`` shard by shard, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype, shape=array.shape)
    step = array.shards[0] if array.shards else array.chunks[0]
    for start in range(0, array.shape[0], step):
        out[start : start + step] = array[start : start + step]
    out.flush()
    del out
    os.replace(tmp, path)


class FrameRows:
    """``frames[rows]`` read row by row on access instead of copied up front, so a
    dataset over some videos of a mapped array stays a view of the shared file."""

    def __init__(self, frames: np.ndarray, rows: np.ndarray) -> None:
        self.frames, self.rows = frames, rows
        self.shape = (len(rows), *frames.shape[1:])
        self.dtype = frames.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.frames[self.rows[key]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.frames[self.rows], dtype=dtype)


class RaggedStore:
    """Read a ragged store. Frame arrays can be pulled into memory once per process, or
    mapped once per machine (:meth:`load`), after which window reads are numpy slices."""

    def __init__(self, path: str | Path, cache_shards: int = 4) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path}: not a Zarr store (no zarr.json)")
        self.group = zarr.open_group(self.path, mode="r")
        self.attrs = dict(self.group.attrs)
        self.offsets = self.group["offsets"][:]
        self.table = {k: _plain(v[:]) for k, v in self.group["videos"].arrays()}
        self._memory: dict[str, np.ndarray] = {}
        self._shards: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_shards = cache_shards

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def array(self, name: str) -> zarr.Array:
        return self.group[name]

    def load(self, *names: str, map_above: int | None = None) -> RaggedStore:
        """Make whole frame arrays numpy: arrays of up to ``map_above`` bytes (default
        ``MAP_ABOVE_BYTES``) are read into memory, larger ones are memory-mapped
        (:meth:`map`). The values are the same either way."""
        map_above = MAP_ABOVE_BYTES if map_above is None else map_above
        for name in names:
            if name in self._memory:
                continue
            arr = self.group[name]
            if arr.nbytes > map_above:
                self._memory[name] = self.map(name)
            else:
                self._memory[name] = arr[:]
        return self

    def map(self, name: str, cache: str | Path | None = None) -> MappedArray:
        """A frame array decompressed once per machine into ``cache`` (default
        :func:`cache_root`) and memory-mapped: every process shares its page cache."""
        cache = Path(cache) if cache is not None else cache_root()
        cache.mkdir(parents=True, exist_ok=True)
        where = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        path = cache / f"{where}-{name}-{_content_key(self.path / name)}.npy"
        with (cache / f"{where}-{name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process decompresses, the others wait
            if not path.is_file():
                # older content of this store, and what a killed writer left
                stale = [*cache.glob(f"{where}-{name}-*.npy"), *cache.glob(f".{where}-{name}-*")]
                for old in stale:
                    old.unlink()
                log.info("decompressing %s/%s into %s", self.path, name, path)
                _decompress_to(self.group[name], path)
        return open_mapped(path)

    def frames(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of a frame array: from memory if loaded, else by shard."""
        if name in self._memory:
            return self._memory[name][start:stop]
        arr = self.group[name]
        shard = arr.shards[0] if arr.shards else arr.chunks[0]
        first, last = start // shard, (stop - 1) // shard
        parts = [self._shard(name, s, shard) for s in range(first, last + 1)]
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        base = first * shard
        return block[start - base : stop - base]

    def _shard(self, name: str, index: int, size: int) -> np.ndarray:
        key = (name, index)
        if key in self._shards:
            self._shards.move_to_end(key)
            return self._shards[key]
        data = self.group[name][index * size : (index + 1) * size]
        self._shards[key] = data
        if len(self._shards) > self._cache_shards:
            self._shards.popitem(last=False)
        return data

    def rows_of(self, videos: np.ndarray, name: str = "frames") -> FrameRows:
        """Every frame of ``videos``, in their order, without copying them (load first)."""
        o = self.offsets
        rows = [np.arange(o[v], o[v + 1]) for v in videos]
        rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        self.load(name)
        return FrameRows(self._memory[name], rows)

    def video(self, i: int, name: str = "frames") -> np.ndarray:
        return self.frames(name, int(self.offsets[i]), int(self.offsets[i + 1]))

    def window(self, i: int, start: int, length: int, name: str = "frames") -> np.ndarray:
        """``length`` frames of video ``i`` from its frame ``start``."""
        n = int(self.offsets[i + 1] - self.offsets[i])
        if start < 0 or start + length > n:
            raise IndexError(f"window {start}:{start + length} outside video {i} of {n} frames")
        o = int(self.offsets[i])
        return self.frames(name, o + start, o + start + length)

    def row(self, i: int) -> dict[str, Any]:
        return {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in self.table.items()}
