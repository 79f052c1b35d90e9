"""The plan of ``sample``: which videos drive, which lend their appearance, from which
frame; the official protocol (LabelfreeMCDM's sorted sources, self mode, a seeded random
reference frame) and the transfer protocol's several appearance sources per driver."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np

from conftest import section
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.tasks.sample import run as sample
from echomotion.video import read_video


def write_stores(tmp_path) -> tuple[RaggedStore, RaggedStore]:
    """videos.zarr (5 videos, names out of order, frame t of video v = 40 v + 3 t) and a
    features.zarr with a motion vector for each."""
    names, splits = ["c", "a", "e", "b", "d"], ["TRAIN", "TRAIN", "TEST", "TRAIN", "TRAIN"]
    with RaggedStoreWriter(tmp_path / "videos.zarr", {"frames": ((16, 16), "uint8")}, 64, 16) as w:
        for v, (name, split) in enumerate(zip(names, splits, strict=True)):
            frames = (40 * v + 3 * np.arange(10 + v))[:, None, None] * np.ones((1, 16, 16))
            w.append({"frames": frames.astype(np.uint8)}, file_name=name, split=split, fps=25.0,
                     ef=50.0 + v, esv=30.0, edv=60.0)  # fmt: skip
    with RaggedStoreWriter(tmp_path / "features.zarr", {"motion": ((3,), "float32")}, 16, 16) as w:
        for v, (name, split) in enumerate(zip(names, splits, strict=True)):
            w.append({"motion": np.full((1, 3), v, np.float32)}, file_name=name, video=v,
                     split=split)  # fmt: skip
    return RaggedStore(tmp_path / "videos.zarr"), RaggedStore(tmp_path / "features.zarr")


class Config(dict):
    """A pipeline config stand-in: a dict whose keys read as attributes."""

    __getattr__ = dict.__getitem__


def stand_in_pipeline(monkeypatch) -> None:
    """``sample`` with a pipeline stand-in whose videos repeat their reference frame."""
    pipe = SimpleNamespace(config=Config(frame_size=(16, 16), fps=25.0))
    pipe.to = lambda device: pipe
    monkeypatch.setattr(sample, "load_pipeline", lambda path, scheduler: pipe)

    def repeat_reference(pipe, refs, motion, params, *args, **kwargs):
        return np.repeat(refs[:, None], params.num_frames, axis=1)  # (k, T, H, W)

    monkeypatch.setattr(sample, "generate_videos", repeat_reference)


def written(tmp_path, params, seed=3) -> tuple[dict, list[dict]]:
    """``sample_dataset`` of the stores of :func:`write_stores`: its report and rows."""
    stores = (tmp_path / "videos.zarr", tmp_path / "features.zarr")
    report = sample.sample_dataset("unused", *stores, tmp_path / "out", tmp_path / "plots",
                                   params, seed=seed)  # fmt: skip
    with (tmp_path / "out" / "FileList.csv").open(newline="") as f:
        return report, list(csv.DictReader(f))


def first_frame_mean(tmp_path, row: dict) -> float:
    return float(
        read_video(tmp_path / "out" / "Videos" / f"{row['FileName']}.avi").frames[0].mean()
    )


# ---------------------------------------------------------------- official sampling protocol


def test_official_plan_sorted_self_random_reference(tmp_path):
    videos, features = write_stores(tmp_path)
    official = section("sample", splits=("TRAIN",), protocol="official")
    sources = sample.plan(videos, features, official, seed=3)
    assert [str(videos.table["file_name"][s.video]) for s in sources] == ["a", "b", "c", "d"]
    assert all(s.appearance == {"self": s.video} for s in sources)
    frames = [s.reference_frame["self"] for s in sources]
    assert all(0 <= f < videos.lengths()[s.video] for f, s in zip(frames, sources, strict=True))
    assert sample.plan(videos, features, official, seed=3) == sources  # seeded
    other = [s.reference_frame["self"] for s in sample.plan(videos, features, official, seed=4)]
    assert other != frames
    first2 = official.model_copy(update={"max_sources": 2})
    assert sample.plan(videos, features, first2, seed=3) == sources[:2]
    # the default protocol is the transfer plan: store order, transfers + self, first frames
    transfer = section("sample", splits=("TRAIN",))
    assert sample.plan(videos, features, transfer, 3) == sample.plan_sources(
        videos, features, ("TRAIN",), transfer.transfer_sources
    )


def test_official_sampling_conditions_on_the_drawn_frame(tmp_path, monkeypatch):
    """Each written video starts with the planned frame of its own motion source."""
    videos, _ = write_stores(tmp_path)
    stand_in_pipeline(monkeypatch)
    params = section("sample", splits=("TRAIN",), protocol="official", num_frames=4, codec="ffv1",
                          max_sources=3, preview_sources=1)  # fmt: skip
    report, rows = written(tmp_path, params)
    assert report["videos"] == 3 and report["self"] == 3 and report["transfer"] == 0
    plan = sample.plan(videos, RaggedStore(tmp_path / "features.zarr"), params, seed=3)
    assert any(s.reference_frame["self"] > 0 for s in plan)  # not the first frames
    for row, source in zip(rows, plan, strict=True):
        name = str(videos.table["file_name"][source.video])
        assert row["MotionSource"] == row["AppearanceSource"] == name and row["Mode"] == "self"
        expected = videos.video(source.video)[source.reference_frame["self"]]
        assert abs(first_frame_mean(tmp_path, row) - float(expected.mean())) <= 2.0  # codec


# ------------------------------------------------ transfer protocol: one motion, N anatomies


def test_each_driver_lends_its_motion_to_the_next_videos_in_store_order(tmp_path):
    videos, features = write_stores(tmp_path)  # TRAIN videos 0, 1, 3, 4 ("c", "a", "b", "d")
    sources = sample.plan_sources(videos, features, ("TRAIN",), 2)
    assert [s.video for s in sources] == [0, 1, 3, 4]
    assert [s.appearance for s in sources] == [
        {"self": 0, "transfer": 1, "transfer2": 3},
        {"self": 1, "transfer": 3, "transfer2": 4},
        {"self": 3, "transfer": 4, "transfer2": 0},  # wrapping around
        {"self": 4, "transfer": 0, "transfer2": 1},
    ]
    # one transfer: the former plan, the next video only
    assert [s.appearance for s in sample.plan_sources(videos, features, ("TRAIN",), 1)] == [
        {"self": v, "transfer": a} for v, a in ((0, 1), (1, 3), (3, 4), (4, 0))
    ]
    assert [s.appearance for s in sample.plan_sources(videos, features, ("TRAIN",), 0)] == [
        {"self": v} for v in (0, 1, 3, 4)
    ]


def test_more_transfers_than_other_videos_takes_each_other_video_once(tmp_path, caplog):
    videos, features = write_stores(tmp_path)
    sources = sample.plan_sources(videos, features, ("TRAIN",), 9)
    for s in sources:
        assert sorted(s.appearance.values()) == [0, 1, 3, 4]  # itself once, every other once
    assert "3 transfer video(s) per motion source, not 9" in caplog.text
    alone = sample.plan_sources(videos, features, ("TEST",), 3)  # one TEST video: self only
    assert [s.appearance for s in alone] == [{"self": 2}]


def test_transfer_videos_are_named_by_pairing_and_all_in_transfer_mode(tmp_path, monkeypatch):
    videos, _ = write_stores(tmp_path)
    stand_in_pipeline(monkeypatch)
    params = section("sample", splits=("TRAIN",), num_frames=4, codec="ffv1", preview_sources=1,
                     transfer_sources=2)  # fmt: skip
    report, rows = written(tmp_path, params)
    assert (report["videos"], report["self"], report["transfer"]) == (12, 4, 8)
    names = [str(n) for n in videos.table["file_name"]]
    first = [r for r in rows if r["MotionSource"] == "c"]
    assert [(r["FileName"], r["Mode"], r["AppearanceSource"]) for r in first] == [
        ("c_self", "self", "c"), ("c_transfer", "transfer", "a"), ("c_transfer2", "transfer", "b"),
    ]  # fmt: skip
    for row in rows:  # each video starts at its own appearance source's first frame
        expected = videos.video(names.index(row["AppearanceSource"]))[0]
        assert abs(first_frame_mean(tmp_path, row) - float(expected.mean())) <= 2.0
