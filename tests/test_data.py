"""Datasets over the store: windows, triplets, workers, determinism."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import echomotion.stores.ragged
from conftest import section
from echomotion.data import TripletDataset, VideoWindowDataset, midway
from echomotion.stores.ragged import MappedArray
from echomotion.tasks.prepare.run import prepare_dataset


@pytest.fixture
def store(echonet_root, tmp_path):
    r = echonet_root
    for i in range(4):
        r.add(f"v{i}", n_frames=40 + 10 * i).trace(f"v{i}", ed=2 + i, es=20 + i)
    r.add("val", Split="VAL").add("nolabels")
    params = section(
        "prepare", target_fps=None, size=32, min_frames=8, shard_frames=64, chunk_frames=16
    )
    prepare_dataset(r.write(), params, tmp_path / "v.zarr", tmp_path / "rejects.csv")
    return tmp_path / "v.zarr"


@pytest.mark.parametrize("in_memory", [True, False])
def test_windows_match_the_stored_frames(store, in_memory):
    ds = VideoWindowDataset(store, length=16, seed=3, in_memory=in_memory)
    assert len(ds) == 5  # four traced TRAIN videos + "nolabels"
    item = ds[1]
    assert item["frames"].shape == (16, 1, 32, 32) and item["frames"].dtype == torch.float32
    video, start = int(item["video"]), int(item["start"])
    expected = ds.store.video(video)[start : start + 16] / 255.0
    np.testing.assert_allclose(item["frames"][:, 0].numpy(), expected, atol=1e-6)


def test_windows_are_deterministic_and_vary_by_epoch(store):
    a, b = VideoWindowDataset(store, 16, seed=3), VideoWindowDataset(store, 16, seed=3)
    starts = [int(a[i]["start"]) for i in range(len(a))]
    assert starts == [int(b[i]["start"]) for i in range(len(b))]
    a.set_epoch(1)
    assert [int(a[i]["start"]) for i in range(len(a))] != starts


def test_dataloader_workers_give_the_same_batches(store):
    ds = VideoWindowDataset(store, 16, seed=0)
    plain = [b["start"] for b in DataLoader(ds, batch_size=2)]
    workers = [b["start"] for b in DataLoader(ds, batch_size=2, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(plain, workers, strict=True))


def test_triplets_are_ed_mid_es(store):
    ds = TripletDataset(store)
    traced = ds.table["ed_es_source"][ds.videos] == "tracings"
    assert traced.sum() == 4  # untraced videos only when the detector found ED/ES
    item = ds[2]
    frames = ds.store.video(int(item["video"]))
    t0, tm, t1 = int(item["t0"]), int(item["tm"]), int(item["t1"])
    assert (t0, t1) == (4, 22) and tm == midway(t0, t1) == 13
    for key, t in (("img0", t0), ("gt", tm), ("img1", t1)):
        np.testing.assert_allclose(item[key][0].numpy(), frames[t] / 255.0, atol=1e-6)


def test_too_long_windows_are_refused(store):
    with pytest.raises(ValueError, match="no video of"):
        VideoWindowDataset(store, length=10_000)


def test_mapped_store_gives_the_same_windows_to_workers(store, tmp_path, monkeypatch):
    ds = VideoWindowDataset(store, 16, seed=0)
    plain = [b["frames"] for b in DataLoader(ds, batch_size=2)]
    monkeypatch.setenv("ECHOMOTION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(echomotion.stores.ragged, "MAP_ABOVE_BYTES", 0)  # map even this small store
    mapped = VideoWindowDataset(store, 16, seed=0)
    assert isinstance(mapped.store.frames("frames", 0, 1), MappedArray)
    assert len(pickle.dumps(mapped)) < 10_000  # workers get the file's name, not its frames
    workers = [b["frames"] for b in DataLoader(mapped, batch_size=2, num_workers=2)]
    assert all(torch.equal(x, y) for x, y in zip(plain, workers, strict=True))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # one copy for all of them
