"""The wild test dataset (echomotion.wild) and the label-free EF probe of `features`."""

from __future__ import annotations

import csv

import av
import numpy as np

from conftest import section
from echomotion.echonet import read_file_list, read_tracings
from echomotion.evaluation.probes import ef_probe
from echomotion.tasks.prepare.run import prepare_dataset
from echomotion.wild import VARIANTS, make_wild


def source_root(echonet_root, n: int = 12):
    for i in range(n):
        echonet_root.add(f"v{i}", n_frames=24, Split=("TRAIN", "TRAIN", "VAL", "TEST")[i % 4])
    return echonet_root.write()


def rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_make_wild_is_deterministic_and_unlabelled(echonet_root, tmp_path):
    src = source_root(echonet_root)
    videos = make_wild(src, tmp_path / "a", seed=3)
    make_wild(src, tmp_path / "b", seed=3)
    for v in videos:
        a, b = (tmp_path / d / "Videos" / f"{v.file_name}.avi" for d in ("a", "b"))
        assert a.read_bytes() == b.read_bytes()
    assert {v.variant for v in videos} == {v.name for v in VARIANTS}
    records, rejects = read_file_list(tmp_path / "a")
    assert len(records) == 12 and not rejects
    assert all(np.isnan(r.ef) and np.isnan(r.esv) for r in records)
    assert (
        read_tracings(tmp_path / "a", {r.file_name for r in records}).by_video["WILD0000"].ed == -1
    )
    sizes = [(v.height, v.width) for v in videos]
    assert sizes.count((600, 600)) == 1 and (120, 160) in sizes and (64, 128) in sizes
    slow = [v for v in videos if v.fps < 10]
    assert len(slow) == 3 and all(v.n_frames == 16 for v in slow)
    assert max(v.n_frames for v in videos) == 4 * 24  # a looped long clip
    # a colour video has chroma (the ECG trace is green)
    colour = next(v for v in videos if v.colour)
    with av.open(str(tmp_path / "a" / "Videos" / f"{colour.file_name}.avi")) as c:
        rgb = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)][-1]
    assert (rgb[..., 1] - rgb[..., 0]).max() > 50  # thin lines: chroma is subsampled
    # the container's rate is exact: the blank FPS cell of one slow clip is not needed
    blank = [r for r in rows(tmp_path / "a" / "FileList.csv") if not r["FPS"]]
    assert len(blank) == 1
    report = prepare_dataset(
        tmp_path / "a", section("prepare", size=32, min_frames=8, shard_frames=64),
        tmp_path / "videos.zarr", tmp_path / "rejects.csv",
    )  # fmt: skip
    assert report.accepted == 12 and report.upsampled == 3 and report.without_ef == 12


def test_partial_labels_keep_half_of_each_split(echonet_root, tmp_path):
    src = source_root(echonet_root, 8)
    videos = make_wild(src, tmp_path / "w", seed=0, labels="partial")
    by_split: dict[str, list[bool]] = {}
    for v in videos:
        by_split.setdefault(v.split, []).append(v.labelled)
    assert by_split == {
        "TRAIN": [True, True, False, False],
        "VAL": [True, False],
        "TEST": [True, False],
    }
    table = {r["FileName"]: r for r in rows(tmp_path / "w" / "FileList.csv")}
    assert all((table[v.file_name]["EF"] != "") == v.labelled for v in videos)


def test_ef_probe_is_skipped_without_enough_labels():
    rng = np.random.default_rng(0)
    x, split = rng.normal(size=(8, 5)), np.array(["TRAIN"] * 4 + ["VAL"] * 2 + ["TEST"] * 2)
    ef = np.full(8, np.nan)
    assert ef_probe(x, ef, split, (1.0, 10.0)) == {
        "skipped": "no EF labels in TRAIN", "n_train": 0, "n_val": 0, "n_test": 0,
    }  # fmt: skip
    ef[[0, 1, 2, 6]] = [50, 60, 55, 40]
    assert ef_probe(x, ef, split, (1.0, 10.0))["skipped"] == "only 1 TEST video with an EF label"
    ef[7] = 45
    assert "r2_test" in ef_probe(x, ef, split, (1.0, 10.0))
