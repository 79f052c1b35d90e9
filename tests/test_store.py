"""The ragged sharded Zarr store: round trip, sharding, atomic writes."""

import pickle

import numpy as np
import pytest

from echomotion.stores.ragged import MappedArray, RaggedStore, RaggedStoreWriter


def videos(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (int(k), 8, 8), dtype=np.uint8) for k in rng.integers(3, 50, n)]


def write(path, vids, shard=64):
    with RaggedStoreWriter(path, {"frames": ((8, 8), "uint8")}, shard, 16, {"kind": "t"}) as w:
        for i, v in enumerate(vids):
            w.append({"frames": v}, file_name=f"v{i}", ef=float(i), n=len(v))


def test_round_trip_by_shard_and_in_memory(tmp_path):
    vids = videos()
    write(tmp_path / "s.zarr", vids)
    store = RaggedStore(tmp_path / "s.zarr", cache_shards=1)
    assert len(store) == len(vids) and store.attrs["kind"] == "t"
    assert store.lengths().tolist() == [len(v) for v in vids]
    for i, v in enumerate(vids):
        np.testing.assert_array_equal(store.video(i), v)
    np.testing.assert_array_equal(store.window(3, 1, 2), vids[3][1:3])
    store.load("frames")
    for i, v in enumerate(vids):
        np.testing.assert_array_equal(store.video(i), v)
    assert store.row(2) == {"file_name": "v2", "ef": 2.0, "n": len(vids[2])}


def test_store_is_few_files(tmp_path):
    vids = videos(40)
    write(tmp_path / "s.zarr", vids, shard=256)
    n_frames = sum(len(v) for v in vids)
    files = [p for p in (tmp_path / "s.zarr").rglob("*") if p.is_file()]
    # one file per 256-frame shard plus metadata, not one per 16-frame chunk
    assert len(files) <= -(-n_frames // 256) + 12


def test_window_outside_video_is_an_error(tmp_path):
    write(tmp_path / "s.zarr", videos(2))
    store = RaggedStore(tmp_path / "s.zarr")
    with pytest.raises(IndexError, match="outside video 0"):
        store.window(0, 0, 10_000)


def test_failed_write_leaves_nothing(tmp_path):
    spec = {"frames": ((8, 8), "uint8")}
    with pytest.raises(RuntimeError), RaggedStoreWriter(tmp_path / "s.zarr", spec, 64, 16) as w:
        w.append({"frames": np.zeros((5, 8, 8), np.uint8)}, file_name="a")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_mismatched_arrays_are_refused(tmp_path):
    spec = {"a": ((2,), "float32"), "b": ((), "int32")}
    with RaggedStoreWriter(tmp_path / "s.zarr", spec, 16, 16) as w:
        with pytest.raises(ValueError, match="differ in length"):
            w.append({"a": np.zeros((3, 2)), "b": np.zeros(4)}, name="x")
        with pytest.raises(ValueError, match="frame shape"):
            w.append({"a": np.zeros((3, 5)), "b": np.zeros(3)}, name="x")


def test_mapped_frames_equal_the_in_memory_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOMOTION_CACHE", str(tmp_path / "cache"))
    vids = videos(30)
    write(tmp_path / "s.zarr", vids)
    memory = RaggedStore(tmp_path / "s.zarr").load("frames", map_above=1 << 40)
    mapped = RaggedStore(tmp_path / "s.zarr").load("frames", map_above=0)
    assert isinstance(mapped.frames("frames", 0, 1), MappedArray)
    for i in range(len(vids)):
        np.testing.assert_array_equal(mapped.video(i), memory.video(i))
    rows = mapped.rows_of(np.array([4, 1]))
    np.testing.assert_array_equal(np.asarray(rows), np.concatenate([vids[4], vids[1]]))
    np.testing.assert_array_equal(rows[len(vids[4])], vids[1][0])


def test_mapped_arrays_pickle_by_file_not_by_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOMOTION_CACHE", str(tmp_path / "cache"))
    write(tmp_path / "s.zarr", videos(30))
    frames = RaggedStore(tmp_path / "s.zarr").map("frames")
    for view in [frames, frames[10:400], frames[5:300:3], frames[7, 2]]:
        data = pickle.dumps(view)
        assert len(data) < 1000 < view.nbytes or view.nbytes < 1000
        np.testing.assert_array_equal(pickle.loads(data), view)
    copy = frames[[1, 2]]  # not a view of the file: pickled as data
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(copy)), copy)


def test_map_cache_is_reused_and_follows_the_content(tmp_path):
    write(tmp_path / "s.zarr", videos(30))
    cache = tmp_path / "cache"
    RaggedStore(tmp_path / "s.zarr").map("frames", cache)
    (first,) = cache.glob("*.npy")
    mtime = first.stat().st_mtime_ns
    RaggedStore(tmp_path / "s.zarr").map("frames", cache)
    assert list(cache.glob("*.npy")) == [first] and first.stat().st_mtime_ns == mtime
    assert not list(cache.glob(".*"))  # written under a temporary name, then renamed
    vids = videos(30, seed=1)
    write(tmp_path / "s.zarr", vids)  # new content: a new file replaces the old one
    store = RaggedStore(tmp_path / "s.zarr")
    frames = store.map("frames", cache)
    assert [p.name for p in cache.glob("*.npy")] != [first.name]
    assert len(list(cache.glob("*.npy"))) == 1
    np.testing.assert_array_equal(frames[: len(vids[0])], vids[0])
