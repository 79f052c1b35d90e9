"""The synthetic echo phantom: EchoNet layout, labels consistent with tracings,
determinism, ground-truth flow and the truth store."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import section
from echomotion.phantom.anatomy import LABELS
from echomotion.phantom.motion import flow_between
from echomotion.phantom.simulate import simulate_video
from echomotion.stores.phantom_truth import TRUTH_SCHEMA
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.phantom.run import generate_phantom
from echomotion.video import read_video

PARAMS = section("phantom", n_videos=5, duration_s=(0.6, 0.8))
SEED = 11
PIXEL_CM = 0.14


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("phantom")
    return out, generate_phantom(PARAMS, SEED, out)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def traced_frames(root: Path) -> dict[str, dict[int, np.ndarray]]:
    """FileName (no .avi) -> frame -> (rows, 4) X1, Y1, X2, Y2 in file order."""
    out: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for r in read_csv(root / "VolumeTracings.csv")[1]:
        name = r["FileName"].removesuffix(".avi")
        out[name][int(r["Frame"])].append([float(r[k]) for k in ("X1", "Y1", "X2", "Y2")])
    return {n: {f: np.array(rows) for f, rows in fr.items()} for n, fr in out.items()}


def disk_volume_ml(t: np.ndarray) -> float:
    """Method of disks, independent of the library: first row long axis, then chords."""
    length = np.hypot(t[0, 2] - t[0, 0], t[0, 3] - t[0, 1])
    diam = np.hypot(t[1:, 2] - t[1:, 0], t[1:, 3] - t[1:, 1])
    return float(np.sum(np.pi / 4 * diam**2 * length / len(diam)) * PIXEL_CM**3)


def polygon_area(t: np.ndarray) -> float:
    xs = np.concatenate([t[1:, 0], t[1:, 2][::-1]])
    ys = np.concatenate([t[1:, 1], t[1:, 3][::-1]])
    return 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))


def test_layout_columns_and_counts(phantom):
    out, summary = phantom
    root = out / "echonet"
    header, rows = read_csv(root / "FileList.csv")
    assert header == ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                      "NumberOfFrames", "Split"]  # fmt: skip
    assert read_csv(root / "VolumeTracings.csv")[0] == ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
    assert len(rows) == PARAMS.n_videos == summary["n_videos"]
    names = [r["FileName"] for r in rows]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"0X[0-9A-F]{16}", n) for n in names)
    assert sorted(p.name for p in (root / "Videos").iterdir()) == sorted(f"{n}.avi" for n in names)
    tracings = traced_frames(root)
    for r in rows:
        video = read_video(root / "Videos" / f"{r['FileName']}.avi")
        assert video.frames.shape == (int(r["NumberOfFrames"]), 112, 112)
        assert (r["FrameHeight"], r["FrameWidth"], float(r["FPS"])) == ("112", "112", 50.0)
        lo, hi = PARAMS.duration_s
        assert lo * 50 - 1 <= video.frames.shape[0] <= hi * 50 + 1
        assert video.frames.max() > 150 and video.frames[:, 0, :5].max() == 0  # fan on black
        frames = tracings[r["FileName"]]
        assert len(frames) == 2 and all(len(t) == 21 for t in frames.values())
    assert summary["n_frames"] == sum(int(r["NumberOfFrames"]) for r in rows)


def test_deterministic(phantom, tmp_path):
    out, _ = phantom
    generate_phantom(PARAMS, SEED, tmp_path)
    for rel in ("FileList.csv", "VolumeTracings.csv"):
        assert (out / "echonet" / rel).read_bytes() == (tmp_path / "echonet" / rel).read_bytes()
    for video in (out / "echonet" / "Videos").iterdir():
        assert video.read_bytes() == (tmp_path / "echonet" / "Videos" / video.name).read_bytes()
    other = simulate_video(PARAMS, SEED + 1, 0, decorrelate=False).frames
    assert not np.array_equal(other, simulate_video(PARAMS, SEED, 0, decorrelate=False).frames)


def test_labels_consistent_with_tracings(phantom):
    root = phantom[0] / "echonet"
    tracings = traced_frames(root)
    for r in read_csv(root / "FileList.csv")[1]:
        frames = tracings[r["FileName"]]
        es, ed = list(frames)  # EchoNet order: the larger (diastolic) frame last
        assert polygon_area(frames[ed]) > polygon_area(frames[es])
        edv, esv = disk_volume_ml(frames[ed]), disk_volume_ml(frames[es])
        assert float(r["EDV"]) == pytest.approx(edv, rel=1e-3)
        assert float(r["ESV"]) == pytest.approx(esv, rel=1e-3)
        assert float(r["EF"]) == pytest.approx(100 * (edv - esv) / edv, abs=0.05)
        lo, hi = PARAMS.ef_percent
        assert lo - 1.0 <= float(r["EF"]) <= hi
        assert 55.0 <= edv <= 200.0
        t = frames[ed]
        axis = (t[0, 2:] - t[0, :2]) / np.hypot(*(t[0, 2:] - t[0, :2]))
        chords = t[1:, 2:] - t[1:, :2]
        assert np.abs(chords @ axis).max() < 1e-3 * np.abs(chords).max()  # perpendicular


def test_splits(phantom):
    rows = read_csv(phantom[0] / "echonet" / "FileList.csv")[1]
    splits = [r["Split"] for r in rows]
    assert set(splits) == {"TRAIN", "VAL", "TEST"}
    assert splits.count("TRAIN") == 3


def test_truth_store_schema(phantom):
    out, _ = phantom
    store = RaggedStore(out / "truth.zarr")
    rows = read_csv(out / "echonet" / "FileList.csv")[1]
    assert [str(n) for n in store.table["file_name"]] == [r["FileName"] for r in rows]
    assert list(store.lengths()) == [int(r["NumberOfFrames"]) for r in rows]
    n = int(store.offsets[-1])
    for name, shape, dtype in (
        ("displacement", (n, 2, 112, 112), np.float16), ("labels", (n, 112, 112), np.uint8),
        ("phase", (n,), np.float32), ("lv_volume_ml", (n,), np.float32),
    ):  # fmt: skip
        assert store.array(name).shape == shape and store.array(name).dtype == dtype
    assert set(store.attrs["schema"]) == set(TRUTH_SCHEMA) >= {"displacement", "labels"}
    tracings = traced_frames(out / "echonet")
    for i, r in enumerate(rows):
        row = store.row(i)
        assert {row["es_frame"], row["ed_frame"]} == set(tracings[r["FileName"]])
        phase, volume = store.video(i, "phase"), store.video(i, "lv_volume_ml")
        assert phase[row["ed_frame"]] < 0.05 and phase[row["es_frame"]] > 0.95
        assert volume[row["ed_frame"]] == pytest.approx(float(r["EDV"]), rel=1e-4)
        assert row["ef"] == pytest.approx(float(r["EF"]), abs=1e-3)


def test_labels_follow_phase(phantom):
    store = RaggedStore(phantom[0] / "truth.zarr")
    tracings = traced_frames(phantom[0] / "echonet")
    for i in range(len(store)):
        labels, phase = store.video(i, "labels"), store.video(i, "phase")
        row = store.row(i)
        lv_area = (labels == LABELS["LV"]).sum(axis=(1, 2))
        assert np.corrcoef(lv_area, phase)[0, 1] < -0.95
        assert lv_area.argmax() in np.flatnonzero(phase < 0.05)
        traced = polygon_area(tracings[row["file_name"]][row["ed_frame"]])
        assert lv_area[row["ed_frame"]] == pytest.approx(traced, rel=0.05)
        for label in ("RV", "LA", "RA"):
            assert (labels == LABELS[label]).sum(axis=(1, 2)).min() > 50


def test_no_folding(phantom):
    assert phantom[1]["min_cell_area"] > 0.1


def test_flow_between_warps_frame_b_onto_frame_a():
    params = section("phantom", n_videos=3, duration_s=(0.6, 0.7), ef_percent=(65.0, 75.0))
    video = simulate_video(params, 5, 0, decorrelate=False)
    a, b = video.ed_frame, video.es_frame
    flow = flow_between(video.displacement[a], video.displacement[b])
    assert flow.shape == (2, 112, 112) and flow.dtype == np.float32
    # 1. G_b(x + flow(x)) = G_a(x)
    yy, xx = np.mgrid[:112, :112].astype(np.float32)
    mx, my = xx + flow[0], yy + flow[1]
    disp_b = video.displacement[b]
    at = [cv2.remap(c, mx, my, cv2.INTER_LINEAR) for c in disp_b]
    resid = np.hypot(
        mx + at[0] - xx - video.displacement[a, 0], my + at[1] - yy - video.displacement[a, 1]
    )
    assert np.median(resid) < 0.02
    # 2. warping frame b by the flow reproduces frame a inside the fan where things move
    img_a, img_b = (video.frames[k].astype(np.float32) for k in (a, b))
    warped = cv2.remap(img_b, mx, my, cv2.INTER_LINEAR)
    region = (video.labels[a] > 0) & (np.hypot(*flow) > 1.0) & (video.labels[b] > 0)
    assert region.sum() > 500
    err_warp = np.abs(warped - img_a)[region].mean()
    err_none = np.abs(img_b - img_a)[region].mean()
    assert err_warp < 0.35 * err_none, (err_warp, err_none)
