"""The prepare stage on small hand-made EchoNet-Dynamic roots, including bad input."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from conftest import section, tracing_rows
from echomotion.echonet import FILE_LIST_COLUMNS, TableError, check_file_name
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.prepare.run import map_frame, prepare_dataset
from echomotion.video import resample_indices

PARAMS = section(
    "prepare", target_fps=25.0, size=32, min_frames=8, shard_frames=64, chunk_frames=16
)


def run(root, tmp_path, params=PARAMS):
    report = prepare_dataset(root, params, tmp_path / "videos.zarr", tmp_path / "rejects.csv")
    with (tmp_path / "rejects.csv").open() as f:
        rejects = {r["FileName"]: r for r in csv.DictReader(f)}
    return report, RaggedStore(tmp_path / "videos.zarr"), rejects


def test_clean_root_is_stored_with_labels_and_ed_es(echonet_root, tmp_path):
    root = echonet_root.add("a", n_frames=40).add("b", n_frames=50, Split="VAL")
    root = root.trace("a", ed=10, es=20).write()
    report, store, rejects = run(root, tmp_path)
    assert (report.rows, report.accepted, report.rejected) == (2, 2, 0) and not rejects
    assert list(store.table["file_name"]) == ["a", "b"]
    assert list(store.table["split"]) == ["TRAIN", "VAL"]
    # 40 frames at 50 fps -> 20 frames at 25 fps; ED 10 -> 5, ES 20 -> 10
    assert store.lengths().tolist() == [20, 25]
    assert store.row(0)["ed"] == 5 and store.row(0)["es"] == 10
    assert store.row(0)["ed_es_source"] == "tracings"
    # b has no tracings: the label-free detector gives its ED/ES instead
    assert store.row(1)["ed_es_source"] in ("detector", "none")
    assert report.ed_es_from_tracings == 1
    assert report.ed_es_from_detector + report.without_ed_es == 1
    assert store.video(0).shape == (20, 32, 32) and store.video(0).dtype == np.uint8
    assert store.row(0)["fps"] == 25.0 and store.row(0)["source_fps"] == 50.0


def test_every_bad_row_is_rejected_with_its_reason_and_the_rest_kept(echonet_root, tmp_path):
    r = echonet_root
    r.add("ok", n_frames=40)
    r.add("junk", write=False)
    (r.root / "Videos" / "junk.avi").write_bytes(b"not a video at all" * 50)
    r.add("empty", write=False)
    (r.root / "Videos" / "empty.avi").write_bytes(b"")
    r.add("cut", n_frames=60)
    data = (r.root / "Videos" / "cut.avi").read_bytes()
    (r.root / "Videos" / "cut.avi").write_bytes(data[: len(data) // 2])
    r.add("absent", write=False)
    r.add("ef_text", EF="fifty")
    r.add("ef_high", EF="180")
    r.add("no_ef", EF="")
    r.add("short", n_frames=10)
    r.add("x..y", write=False)
    r.add("sub/dir", write=False)
    r.add("ok", n_frames=40, write=False)  # duplicate of row 2
    r.add("lower", Split="train")
    r.add("odd_split", Split="HOLDOUT")
    root = r.trace("ok", 5, 15).write()

    report, store, rejects = run(root, tmp_path)
    reasons = {name: rej["reason"] for name, rej in rejects.items()}
    assert report.rows == len(r.rows) == report.accepted + report.rejected
    assert sorted(store.table["file_name"]) == ["lower", "no_ef", "ok"]
    assert "cannot decode" in reasons["junk"]
    assert "empty" in reasons["empty"]
    assert "truncated" in reasons["cut"]
    assert "not found" in reasons["absent"]
    assert "EF is not a number" in reasons["ef_text"]
    assert "outside" in reasons["ef_high"]
    assert "too few frames" in reasons["short"]
    assert "'..'" in reasons["x..y"]
    assert "path separator" in reasons["sub/dir"]
    assert "duplicate FileName 'ok' (first at row 2)" in reasons["ok"]
    assert "HOLDOUT" in reasons["odd_split"]
    assert rejects["ok"]["row"] == "13"  # the duplicate's own line, header = line 1
    lower = list(store.table["file_name"]).index("lower")
    assert store.table["split"][lower] == "TRAIN"
    no_ef = list(store.table["file_name"]).index("no_ef")
    assert math.isnan(store.table["ef"][no_ef]) and report.without_ef == 1


@pytest.mark.parametrize("newline,bom", [("\r\n", False), ("\n", True), ("\r\n", True)])
def test_bom_and_crlf_tables_read_like_plain_ones(echonet_root, tmp_path, newline, bom):
    root = echonet_root.add("a").add("b").write(newline=newline, bom=bom)
    report, store, _ = run(root, tmp_path)
    assert report.accepted == 2 and list(store.table["file_name"]) == ["a", "b"]


def test_extra_columns_are_ignored(echonet_root, tmp_path):
    root = echonet_root.add("a", Site="X").write(columns=(*FILE_LIST_COLUMNS, "Site"))
    assert run(root, tmp_path)[0].accepted == 1


@pytest.mark.parametrize("missing", ["FileName", "Split", "EF"])
def test_missing_column_stops_naming_file_and_column(echonet_root, tmp_path, missing):
    columns = tuple(c for c in FILE_LIST_COLUMNS if c != missing)
    root = echonet_root.add("a").write(columns=columns)
    with pytest.raises(TableError, match=rf"FileList\.csv: missing column\(s\) {missing}"):
        run(root, tmp_path)
    assert not (tmp_path / "videos.zarr").exists()


def test_table_without_rows_stops(echonet_root, tmp_path):
    root = echonet_root.write()
    with pytest.raises(TableError, match=r"FileList\.csv: no rows"):
        run(root, tmp_path)


def test_missing_file_list_stops(tmp_path):
    with pytest.raises(TableError, match=r"FileList\.csv: file not found"):
        run(tmp_path, tmp_path)


def test_without_tracings_file_videos_are_kept(echonet_root, tmp_path):
    root = echonet_root.add("a").write()
    (root / "VolumeTracings.csv").unlink()
    report, store, _ = run(root, tmp_path)
    assert report.accepted == 1 and report.ed_es_from_tracings == 0
    assert store.row(0)["ed_es_source"] in ("detector", "none")


def test_larger_traced_area_is_ed_whatever_the_order(echonet_root, tmp_path):
    r = echonet_root.add("a", n_frames=40)
    r.tracings += tracing_rows("a", 30, 5) + tracing_rows("a", 4, 14)
    _report, store, _ = run(r.write(), tmp_path, PARAMS.model_copy(update={"target_fps": None}))
    assert (store.row(0)["ed"], store.row(0)["es"]) == (4, 30)


def test_interrupted_prepare_leaves_no_store(echonet_root, tmp_path, monkeypatch):
    root = echonet_root.add("a").add("b").write()
    import echomotion.tasks.prepare.run as prep

    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = prep._load
    monkeypatch.setattr(prep, "_load", boom)
    with pytest.raises(KeyboardInterrupt):
        run(root, tmp_path)
    assert not (tmp_path / "videos.zarr").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def _files(store) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


def test_several_workers_write_the_same_bytes_as_one(echonet_root, tmp_path):
    r = echonet_root.add("a", n_frames=40).add("b", n_frames=50, fps=30.0).add("short", n_frames=6)
    r.add("junk", write=False)
    (r.root / "Videos" / "junk.avi").write_bytes(b"not a video at all" * 50)
    r.add("absent", write=False).add("c", n_frames=45, Split="VAL")
    root = r.trace("a", ed=10, es=20).write()
    one, two = tmp_path / "one", tmp_path / "two"
    report1, store1, rejects1 = run(root, one, PARAMS)
    report2, store2, rejects2 = run(root, two, PARAMS.model_copy(update={"workers": 2}))
    assert list(store2.table["file_name"]) == ["a", "b", "c"]
    assert set(rejects2) == {"short", "junk", "absent"} and rejects2 == rejects1
    assert (two / "rejects.csv").read_bytes() == (one / "rejects.csv").read_bytes()
    assert store2.table.keys() == store1.table.keys()
    for column, values in store1.table.items():
        np.testing.assert_array_equal(store2.table[column], values, err_msg=column)
    for i in range(len(store1)):
        np.testing.assert_array_equal(store2.video(i), store1.video(i))
    assert _files(two / "videos.zarr") == _files(one / "videos.zarr")  # shards, table, attrs
    assert json.dumps(report2.as_dict()) == json.dumps(report1.as_dict())


def test_resample_indices_and_frame_mapping():
    assert resample_indices(10, 50, None).tolist() == list(range(10))
    assert resample_indices(10, 50, 25).tolist() == [0, 2, 4, 6, 8]
    assert resample_indices(9, 30, 16).tolist() == [0, 2, 4, 6, 8]
    up = resample_indices(3, 10, 20)
    assert up.tolist() == [0, 0, 1, 2, 2] or up.tolist() == [0, 1, 1, 2, 2]
    assert map_frame(7, resample_indices(10, 50, 25)) in (3, 4)
    assert map_frame(-1, np.arange(5)) == -1


@pytest.mark.parametrize(
    "name,ok",
    [("0X1A2B", True), ("a.avi", True), ("../x", False), ("a/b", False), ("a\\b", False),
     ("", False), (".hidden", False), ("a b", False)],
)  # fmt: skip
def test_check_file_name(name, ok):
    if ok:
        assert check_file_name(name) == name.removesuffix(".avi")
    else:
        with pytest.raises(ValueError):
            check_file_name(name)


@pytest.mark.parametrize("policy", ["repeat", "native"])
def test_low_fps_policy_and_the_resampling_report(echonet_root, tmp_path, policy):
    root = echonet_root.add("slow", n_frames=16, fps=8.33).add("fast", n_frames=60, fps=60.0)
    root = root.add("same", n_frames=30, fps=25.0).add("nofps", n_frames=16, fps=8.0, FPS="")
    params = PARAMS.model_copy(update={"low_fps": policy})
    report, store, rejects = run(root.write(), tmp_path, params)
    assert not rejects and report.accepted == 4
    slow, fast, same, nofps = (store.row(i) for i in range(4))
    # above the target: always downsampled (60 -> 25 fps: 60 frames -> 25)
    assert fast["fps"] == 25.0 and fast["n_frames"] == 25 and same["n_frames"] == 30
    assert report.downsampled == 1 and report.downsample_factor_max == pytest.approx(2.4)
    if policy == "repeat":  # today's behaviour: 16 frames at 8.33 fps -> 46 at 25 fps
        assert slow["fps"] == 25.0 and slow["n_frames"] == 46
        assert nofps["fps"] == 25.0 and nofps["source_fps"] == 8.0  # the container's rate
        assert (report.upsampled, report.kept_source_rate, report.below_target_kept_native) == (
            2,
            1,
            0,
        )
        assert report.upsample_factor_max == pytest.approx(25 / 8)
    else:  # kept at their own rate, the rate recorded
        assert slow["fps"] == pytest.approx(8.33) and slow["n_frames"] == 16
        assert nofps["fps"] == 8.0 and nofps["n_frames"] == 16
        assert (report.upsampled, report.kept_source_rate, report.below_target_kept_native) == (
            0,
            3,
            2,
        )
        assert math.isnan(report.upsample_factor_max)
    assert report.fps_histogram == {
        "0-10": 2, "10-20": 0, "20-30": 1, "30-40": 0, "40-50": 0, "50-60": 0, "60+": 1,
    }  # fmt: skip
    assert report.frame_size_histogram == {"64x64": 4}
    assert report.source_fps_min == 8.0 and report.source_fps_max == 60.0


def test_source_histograms_and_plots(tmp_path):
    from echomotion.tasks.prepare.run import PrepareReport, source_histograms, write_source_plots

    by_fps, by_size = source_histograms(
        [8.3, 50.0, 50.0, 60.0], [(120, 160), (0, 0), (112, 112)] * 1 + [(112, 112)]
    )
    assert by_fps["0-10"] == 1 and by_fps["50-60"] == 2 and by_fps["60+"] == 1
    assert list(by_size.items()) == [("112x112", 2), ("120x160", 1), ("unknown", 1)]
    report = PrepareReport(
        1,
        1,
        0,
        10,
        1,
        0,
        0,
        1,
        math.nan,
        math.nan,
        fps_histogram=by_fps,
        frame_size_histogram=by_size,
    )
    write_source_plots(report, tmp_path / "plots")
    rows = list(csv.DictReader((tmp_path / "plots/frame_size.csv").open()))
    assert rows[0] == {"frame_size": "112x112", "videos": "2"}
    assert (tmp_path / "plots/source_fps.csv").read_text().startswith("fps_bin,videos\n0-10,1\n")
