"""Source-rate frames beside the resampled store (prepare.native_frames) and the
pseudo-label stages reading them (shared.pseudo_label_frames: native)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import REPO, EchoNetRoot, section
from echomotion.cli.preset import load_preset
from echomotion.data import TripletDataset, midway
from echomotion.flow.pairs import FlowPairDataset
from echomotion.mafe.dataset import PseudoLabelTriplets
from echomotion.params import load_params, validate_params
from echomotion.reid.identities import identity_frames
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.stores.videos import NATIVE, frames_store
from echomotion.tasks.prepare.params import PrepareParams
from echomotion.video import read_video, resample_indices

SIZE = 32
PARAMS = section(
    "prepare", target_fps=25.0, size=SIZE, min_frames=8, shard_frames=64, chunk_frames=16
)
NATIVE_PARAMS = PARAMS.model_copy(update={"native_frames": True})
# name -> (source frames, fps, traced ED, traced ES); odd traced frames are dropped at 25 fps
VIDEOS = {"a": (40, 50.0, 11, 21), "b": (50, 50.0, None, None), "c": (30, 20.0, 3, 9)}


def _root(path: Path) -> Path:
    root = EchoNetRoot(path)
    for name, (n, fps, ed, es) in VIDEOS.items():
        root.add(name, n_frames=n, fps=fps, Split="VAL" if name == "b" else "TRAIN")
        if ed is not None:
            root.trace(name, ed=ed, es=es)
    return root.write()


def _prepare(root: Path, out: Path, params: PrepareParams):
    from echomotion.tasks.prepare.run import prepare_dataset

    return prepare_dataset(root, params, out / "videos.zarr", out / "rejects.csv")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("native")
    root = _root(work / "echonet")
    off = _prepare(root, work / "off", PARAMS)
    on = _prepare(root, work / "on", NATIVE_PARAMS)
    return {"root": root, "off": work / "off", "on": work / "on", "reports": (off, on)}


def _files(store: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(store)): f.read_bytes()
        for f in sorted(store.rglob("*"))
        if f.is_file() and NATIVE not in f.relative_to(store).parts
    }


def _source(root: Path, name: str) -> np.ndarray:
    """Every frame of a source video, decoded on its own at the store's size."""
    return read_video(root / "Videos" / f"{name}.avi", size=(SIZE, SIZE)).frames


def test_resampled_store_and_report_are_byte_identical_with_native_frames(stores):
    off, on = _files(stores["off"] / "videos.zarr"), _files(stores["on"] / "videos.zarr")
    assert sorted(off) == sorted(on) and all(off[k] == on[k] for k in off)
    rejects = [(stores[k] / "rejects.csv").read_bytes() for k in ("off", "on")]
    assert rejects[0] == rejects[1]
    reports = [json.dumps(r.as_dict()) for r in stores["reports"]]  # NaN-safe comparison
    assert reports[0] == reports[1]
    assert not (stores["off"] / "videos.zarr" / NATIVE).exists()


def test_native_frames_are_the_decoded_source_frames(stores):
    native = RaggedStore(stores["on"] / "videos.zarr" / NATIVE)
    outer = RaggedStore(stores["on"] / "videos.zarr")
    assert list(native.table["file_name"]) == list(outer.table["file_name"]) == list(VIDEOS)
    for i, (name, (n, fps, _, _)) in enumerate(VIDEOS.items()):
        frames = native.video(i)
        assert frames.shape == (n, SIZE, SIZE) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, _source(stores["root"], name))
        assert native.row(i)["fps"] == native.row(i)["source_fps"] == fps
        assert native.row(i)["n_frames"] == n
        # the resampled store holds rows of the native frames: nothing is decoded twice
        keep = resample_indices(n, fps, outer.row(i)["fps"])
        np.testing.assert_array_equal(outer.video(i), frames[keep])
    # sharded like the resampled store: a few shard files, not one per chunk
    shards = list((stores["on"] / "videos.zarr" / NATIVE / "frames").rglob("c/*"))
    assert 0 < len(shards) <= -(-int(native.offsets[-1]) // PARAMS.shard_frames)


def test_native_ed_es_are_the_exact_traced_frames(stores):
    native = RaggedStore(stores["on"] / "videos.zarr" / NATIVE)
    outer = RaggedStore(stores["on"] / "videos.zarr")
    for i, (_, (_, fps, ed, es)) in enumerate(VIDEOS.items()):
        row, resampled = native.row(i), outer.row(i)
        source = resample_indices(row["n_frames"], fps, resampled["fps"])
        if ed is not None:
            assert (row["ed"], row["es"], row["ed_es_source"]) == (ed, es, "tracings")
        elif resampled["ed"] >= 0:  # the detector's frames, as the source frames they show
            assert row["ed_es_source"] == resampled["ed_es_source"] == "detector"
            assert (row["ed"], row["es"]) == (source[resampled["ed"]], source[resampled["es"]])
        if resampled["ed_auto"] >= 0:
            assert row["ed_auto"] == source[resampled["ed_auto"]]
    # a: at 25 fps the traced ED 11 is only the nearest kept frame (source 10 or 12)
    assert outer.row(0)["ed"] in (5, 6) and native.row(0)["ed"] == 11


def test_native_frames_cost_no_second_decode(stores, tmp_path, monkeypatch):
    opened: list[str] = []
    real_open = av.open

    def spy(path, *args, **kwargs):
        opened.append(Path(path).stem)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    _prepare(stores["root"], tmp_path / "off", PARAMS)
    off = sorted(opened)
    opened.clear()
    _prepare(stores["root"], tmp_path / "on", NATIVE_PARAMS)
    assert sorted(opened) == off == sorted(VIDEOS)


def test_frames_store_chooses_and_explains(stores):
    off, on = stores["off"] / "videos.zarr", stores["on"] / "videos.zarr"
    assert frames_store(on, "resampled") == on and frames_store(off) == off
    assert frames_store(on, "native") == on / NATIVE
    with pytest.raises(FileNotFoundError, match=r"prepare\.native_frames: true"):
        frames_store(off, "native")
    with pytest.raises(ValueError, match="frames must be one of"):
        frames_store(on, "source")


def test_frames_store_rejects_a_stale_native_store(stores, tmp_path):
    import shutil

    copy = tmp_path / "videos.zarr"
    shutil.copytree(stores["on"] / "videos.zarr", copy)
    shutil.rmtree(copy / NATIVE)
    shape = ((SIZE, SIZE), "uint8")
    with RaggedStoreWriter(copy / NATIVE, {"frames": shape}, 64, 16) as writer:
        writer.append({"frames": np.zeros((2, SIZE, SIZE), np.uint8)}, file_name="zz")
    with pytest.raises(ValueError, match="other videos"):
        frames_store(copy, "native")


def _traced(stores, name: str) -> tuple[np.ndarray, int, int]:
    _, _, ed, es = VIDEOS[name]
    return _source(stores["root"], name), ed, es


def test_flow_pairs_in_native_mode_are_the_traced_frames(stores):
    path = frames_store(stores["on"] / "videos.zarr", "native")
    data = FlowPairDataset(path, splits=("TRAIN",), edes_fraction=1.0, seed=3)
    frames, ed, es = _traced(stores, "a")
    for index in range(len(data)):
        item = data[index]
        if int(item["video"]) != 0:
            continue
        pair = {int(item["t1"]), int(item["t2"])}
        assert pair in ({midway(ed, es), ed}, {midway(ed, es), es})
        img = np.round(item["img1"][0].numpy() * 255).astype(np.uint8)
        np.testing.assert_array_equal(img, frames[int(item["t1"])])


def test_triplets_and_reid_frames_in_native_mode(stores):
    path = frames_store(stores["on"] / "videos.zarr", "native")
    triplets = TripletDataset(path, splits=("TRAIN",))
    for name, index in (("a", 0), ("c", 1)):
        frames, ed, es = _traced(stores, name)
        item = triplets[index]
        assert (int(item["t0"]), int(item["tm"]), int(item["t1"])) == (ed, midway(ed, es), es)
        for key, t in (("img0", ed), ("gt", midway(ed, es)), ("img1", es)):
            got = np.round(item[key][0].numpy() * 255).astype(np.uint8)
            np.testing.assert_array_equal(got, frames[t])
    reid = identity_frames(path, ("TRAIN",), None)  # every frame of the TRAIN videos
    expect = [_source(stores["root"], n) for n in ("a", "c")]
    np.testing.assert_array_equal(reid.frames, np.concatenate(expect))


def test_mafe_triplets_in_native_mode(stores, tmp_path):
    path = frames_store(stores["on"] / "videos.zarr", "native")
    native = RaggedStore(path)
    videos = TripletDataset(path, splits=("TRAIN", "VAL", "TEST")).videos
    flow = tmp_path / "flow.zarr"
    reid = tmp_path / "reid.zarr"
    with (
        RaggedStoreWriter(flow, {"flow": ((4, SIZE, SIZE), "float16")}, 16, 16) as fw,
        RaggedStoreWriter(reid, {"embedding": ((2, 8), "float32")}, 16, 16) as rw,
    ):
        for v in videos:
            ed, es = int(native.table["ed"][v]), int(native.table["es"][v])
            times = {"video": int(v), "ed": ed, "mid": midway(ed, es), "es": es}
            fw.append({"flow": np.zeros((1, 4, SIZE, SIZE), np.float16)}, **times)
            rw.append({"embedding": np.zeros((1, 2, 8), np.float32)}, video=int(v))
    data = PseudoLabelTriplets(path, flow, reid, splits=("TRAIN",))
    frames, ed, es = _traced(stores, "a")
    item = data.paper_item(0)
    assert (int(item["t0"]), int(item["tm"]), int(item["t1"])) == (ed, midway(ed, es), es)
    np.testing.assert_array_equal(np.round(item["img0"][0].numpy() * 255), frames[ed])
    np.testing.assert_array_equal(np.round(item["img1"][0].numpy() * 255), frames[es])
    # labels of the resampled store's ED/ES frames do not fit the native triplets
    with pytest.raises(ValueError, match="labels frames"):
        PseudoLabelTriplets(stores["on"] / "videos.zarr", flow, reid, splits=("TRAIN",))


def test_truth_pairs_of_the_native_store_use_the_source_frames(tiny_native):
    from echomotion.flow.truth import _resized_truth, load_truth_pairs

    videos, truth = tiny_native
    native = RaggedStore(videos / NATIVE)
    pairs = load_truth_pairs(videos / NATIVE, truth, "TRAIN", max_videos=1)
    assert pairs is not None
    v = list(native.table["file_name"]).index(pairs.file_names[0])
    row = native.row(v)
    ed, es = row["ed"], row["es"]
    frames = native.video(v)
    np.testing.assert_array_equal(pairs.frames_a[0], frames[midway(ed, es)])
    np.testing.assert_array_equal(pairs.frames_b[0], frames[ed])
    t = RaggedStore(truth)
    tv = list(t.table["file_name"]).index(pairs.file_names[0])
    disp, labels = t.video(tv, "displacement"), t.video(tv, "labels")
    flow, _ = _resized_truth(disp, labels, midway(ed, es), ed, frames.shape[1:])
    np.testing.assert_array_equal(pairs.flow[0], flow)


@pytest.fixture(scope="module")
def tiny_native(tiny_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny phantom prepared with native frames (tracings give exact ED/ES)."""
    out = tmp_path_factory.mktemp("tiny_native")
    params = section(
        "prepare", target_fps=25.0, size=64, min_frames=16, shard_frames=256, native_frames=True
    )
    _prepare(tiny_dataset["root"], out, params)
    return out / "videos.zarr", tiny_dataset["truth"]


def test_paper_preset_reads_native_frames():
    _, merged = load_preset("paper", REPO / "params.yaml")
    paper = validate_params(merged, "paper preset")
    assert paper.prepare.native_frames and paper.shared.pseudo_label_frames == "native"
    defaults = load_params(REPO / "params.yaml")
    assert not defaults.prepare.native_frames
    assert defaults.shared.pseudo_label_frames == "resampled"
