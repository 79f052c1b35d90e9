"""The LV-area EF estimator and the motion-transfer checks, on the tiny phantom and on
constructed cases whose answers are known: rasterised tracings against the phantom's truth
masks, EF from truth areas against the FileList EF, SSIM of a video with itself (at another
frame rate), appearance nearest-source fractions."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
import pytest
import torch
import zarr

from device_check import assert_runs_on, assert_runs_on_meta
from echomotion.echonet import read_file_list
from echomotion.evaluation.lv import (
    LVSegmenter,
    TracedFrameDataset,
    areas_of,
    dice,
    fit_calibration,
    lv_areas,
    lv_loss,
    predict_masks,
    raw_ef,
)
from echomotion.evaluation.tracings import (
    polygon_mask,
    read_source_sizes,
    read_traced_frames,
    stored_frame,
    tracing_mask,
)
from echomotion.evaluation.transfer import mean_ssim, nearer_fraction, time_matched
from echomotion.phantom.anatomy import LABELS
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.evaluate.figures import (
    COLOURS,
    PANEL,
    kind_of,
    lv_area_figure,
    save_lv_area_figure,
    series_name,
)
from echomotion.tasks.evaluate.lv import by_pairing, pairing_index, traced_sets
from echomotion.training.loop import train
from echomotion.training.params import TrainParams

pytestmark = pytest.mark.usefixtures("one_thread")
LV = LABELS["LV"]


@pytest.fixture(scope="module")
def phantom(tiny_dataset):
    """(names, tracings, source sizes, truth labels array, truth offsets) of the phantom."""
    root = tiny_dataset["root"]
    records, _ = read_file_list(root)
    names = [r.file_name for r in records]
    truth = zarr.open(str(tiny_dataset["truth"]))
    return names, read_traced_frames(root, set(names)), read_source_sizes(root), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_polygon_mask_of_a_square():
    square = np.array([[1.5, 1.5], [5.5, 1.5], [5.5, 4.5], [1.5, 4.5]])  # (x, y)
    mask = polygon_mask(square, (8, 8))
    expected = np.zeros((8, 8), bool)
    expected[2:5, 2:6] = True  # rows 2..4 (y), columns 2..5 (x)
    np.testing.assert_array_equal(mask, expected)


def test_rasterised_tracings_match_the_truth_masks(phantom, tiny_dataset):
    names, tracings, sizes, truth = phantom
    store = RaggedStore(tiny_dataset["truth"])
    offsets = truth["offsets"][:]
    ious_full, ious_small = [], []
    for v, name in enumerate(store.table["file_name"].astype(str)):
        for frame, tracing in tracings[name].items():
            lv = truth["labels"][offsets[v] + frame] == LV  # (112, 112) at the source size
            ious_full.append(iou(tracing_mask(tracing, sizes[name], lv.shape), lv))
            small = lv.reshape(56, 2, 56, 2).mean(axis=(1, 3)) >= 0.5  # area-resized to 56
            ious_small.append(iou(tracing_mask(tracing, sizes[name], (56, 56)), small))
    assert len(ious_full) == 2 * len(names)
    assert min(ious_full) > 0.85 and np.mean(ious_full) > 0.9, ious_full
    assert min(ious_small) > 0.8 and np.mean(ious_small) > 0.88, ious_small


def test_traced_frame_maps_to_the_stored_frame_nearest_in_time():
    assert stored_frame(38, 50.0, 25.0, 100) == 19  # 0.76 s
    assert stored_frame(7, 8.0, 25.0, 100) == 22  # 0.875 s: upsampled, repeated frames
    assert stored_frame(500, 50.0, 25.0, 40) == 39  # clipped to the video


def test_ef_from_truth_lv_areas_matches_the_file_list(phantom, tiny_dataset):
    truth = phantom[3]
    store = RaggedStore(tiny_dataset["videos"])  # labels of the stored videos, 25 fps
    offsets = truth["offsets"][:]
    table = RaggedStore(tiny_dataset["truth"]).table
    raw, ef = [], []
    for v in range(len(offsets) - 1):
        labels = truth["labels"][offsets[v] : offsets[v + 1] : 2]  # 50 -> 25 fps
        raw.append(raw_ef((labels == LV).sum(axis=(1, 2)), 1.5))
        ef.append(float(table["ef"][v]))
    raw, ef = np.array(raw), np.array(ef)
    a, b = fit_calibration(raw, ef)
    pred = a + b * raw
    r2 = 1 - ((pred - ef) ** 2).sum() / ((ef - ef.mean()) ** 2).sum()
    assert r2 > 0.95 and np.abs(pred - ef).max() < 5, (r2, pred, ef)
    assert len(store) == len(ef)


def test_raw_ef_and_calibration_on_known_curves():
    curve = np.array([100.0, 90, 70, 50, 70, 90, 100])
    assert raw_ef(curve, 1.0) == pytest.approx(50.0)
    assert raw_ef(curve, 1.5) == pytest.approx(100 * (1 - 0.5**1.5))
    assert np.isnan(raw_ef(np.zeros(4)))
    a, b = fit_calibration(np.array([10.0, 20, 30]), np.array([25.0, 45, 65]))
    assert (a, b) == (pytest.approx(5.0), pytest.approx(2.0))
    assert fit_calibration(np.array([10.0, 10]), np.array([40.0, 60])) == (50.0, 0.0)


def test_segmenter_shapes_round_trip_and_loss(tmp_path):
    torch.manual_seed(0)
    model = LVSegmenter(widths=(4, 8, 8), input_size=32).eval()
    frames = torch.rand(2, 1, 30, 28)
    assert model(frames).shape == (2, 1, 30, 28)
    model.save_pretrained(tmp_path)
    loaded = LVSegmenter.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(frames), model(frames))
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 8:20, 10:22] = True
    dataset = TracedFrameDataset((masks * 200).astype(np.uint8), masks, seed=0)
    batch = {k: torch.stack([dataset[i][k] for i in range(3)]) for k in ("frames", "mask")}
    assert batch["frames"].shape == batch["mask"].shape == (3, 1, 32, 32)
    # augmentation moves frame and mask together
    f, m = batch["frames"], batch["mask"]
    assert f[m].mean() > 0.5 > 0.1 > f[~m].mean() and not (m == m[0]).all()
    loss, logs = lv_loss(model.train(), batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and 0 <= logs["dice"] <= 1
    areas = lv_areas(model, (masks * 200).astype(np.uint8), batch_size=2, device="cpu")
    assert areas.shape == (3,) and (areas >= 0).all()
    assert dice(masks, masks).tolist() == [1.0, 1.0, 1.0]


def test_lv_area_counts_the_largest_region_only():
    """``largest`` counts the pixels of the largest region above 0.5 and nothing else: not
    a stray blob (the left atrium of a frame near ES), not the faint probability spread over
    the frame, which the former ``soft`` sum adds to every frame alike and so compresses the
    area ratio (A_min / A_max) towards 1."""
    lv = np.zeros((2, 32, 32), np.float32)
    lv[:, 4:14, 4:14] = 0.9  # a 100-pixel LV in both frames
    lv[1, 20:26, 20:26] = 0.9  # a 36-pixel stray region in the second
    faint = lv + 0.05  # the faint floor of a segmenter's output
    assert areas_of(faint, "largest").tolist() == [100.0, 100.0]
    soft = areas_of(faint, "soft")
    np.testing.assert_allclose(soft, [90 + 0.05 * 1024, 90 + 32.4 + 0.05 * 1024], rtol=1e-5)
    shrunk = faint.copy()
    shrunk[1] = 0.05
    shrunk[1, 4:11, 4:11] = 0.95  # the LV at 49 of its 100 pixels
    assert raw_ef(areas_of(shrunk, "largest")) > raw_ef(areas_of(shrunk, "soft")) + 20
    assert areas_of(np.zeros((1, 8, 8), np.float32)).tolist() == [0.0]  # no region: 0
    with pytest.raises(ValueError, match="largest"):
        areas_of(lv, "hard")


@pytest.mark.parametrize("check", [partial(assert_runs_on, "cpu"), assert_runs_on_meta])
def test_lv_areas_run_on_the_given_device(check):
    """On the CPU to the end, on the meta device until the areas are needed on the host
    (tests/device_check.py); a new segmenter per run (the meta device drops weights)."""
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    segmenter = partial(LVSegmenter, widths=(4, 8), input_size=32)
    check(lambda d: lv_areas(segmenter(), frames, batch_size=2, device=d))


def test_time_matched_frames_across_frame_rates():
    gen, real = time_matched(5, 12.5, 8, 25.0)
    assert gen.tolist() == [0, 1, 2, 3] and real.tolist() == [0, 2, 4, 6]


def test_ssim_of_a_video_with_itself_at_another_frame_rate_is_one():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (20, 24, 24), dtype=np.uint8)
    generated = real[::2]  # the same video at half the frame rate
    assert mean_ssim(generated, real, 12.5, 25.0) == pytest.approx(1.0, abs=1e-5)
    assert mean_ssim(generated, real, 25.0, 25.0) < 0.2  # frames not matched in time
    other = rng.integers(0, 256, (20, 24, 24), dtype=np.uint8)
    assert mean_ssim(generated, other, 12.5, 25.0) < 0.2


def test_nearer_fraction():
    e = np.eye(3)
    query = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    first = e[[0, 1, 0, 1]]
    second = e[[1, 0, 2, 0]]
    assert nearer_fraction(query, first, second) == 0.5  # rows 0 and 1 are nearer to first


def test_a_briefly_trained_segmenter_finds_the_lv_of_unseen_videos(tiny_dataset, tmp_path):
    """Trained with the project's loop on the traced frames of 6 phantom videos (64 x 64,
    rasterised from tracings of 112 x 112 frames at 50 fps), tested on the other 2."""
    traced = traced_sets(RaggedStore(tiny_dataset["videos"]), tiny_dataset["root"])
    frames, masks, rows = (
        np.concatenate([getattr(s, k) for s in traced.values()])
        for k in ("frames", "masks", "rows")
    )
    fit, held = rows < 6, rows >= 6
    torch.manual_seed(0)
    model = LVSegmenter(widths=(8, 16, 16))
    params = TrainParams(steps=120, batch_size=6, lr=5e-3, checkpoint_every=120, log_every=60)
    train(
        model,
        TracedFrameDataset(frames[fit], masks[fit]),
        lv_loss,
        params,
        out_dir=tmp_path,
        seed=0,
    )
    scores = dice(predict_masks(model, frames[held], 32, device="cpu") > 0.5, masks[held])
    assert held.sum() == 4 and scores.mean() > 0.85, scores


def test_lv_area_figure_has_a_panel_per_driver_and_draws_each_series(tmp_path):
    rows = [
        {"series": f"V{d}/{kind}", "time_s": t / 10, "area_px": 100 + 20 * np.sin(t + d)}
        for d in range(5)
        for kind in ("driver", "self", "transfer2")  # numbered: coloured as its kind
        for t in range(12)
    ]
    assert (series_name("transfer", 0), series_name("transfer", 1)) == ("transfer", "transfer2")
    assert kind_of(series_name("transfer", 2)) == "transfer" == kind_of("transfer")
    image = lv_area_figure(rows, columns=4)
    height, width = PANEL
    assert image.shape == (20 + 2 * height, 4 * width, 3)
    for colour in COLOURS.values():  # every series' colour is drawn
        assert (image == np.array(colour, np.uint8)).all(axis=2).any()
    assert lv_area_figure([]) is None
    save_lv_area_figure(rows, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0
    save_lv_area_figure([], tmp_path / "b.png")  # a declared output: always written
    assert cv2.imread(str(tmp_path / "b.png")).shape == (40, 4 * width, 3)


def test_several_videos_per_driver_are_scored_per_pairing_and_by_driver_mean():
    drivers = ["a", "b", "a", "c", "b", "c", "a", "b", "c"]
    assert pairing_index(drivers).tolist() == [0, 0, 1, 0, 1, 1, 2, 2, 2]
    truth = np.array([30.0, 50.0, 30.0, 70.0, 50.0, 70.0, 30.0, 50.0, 70.0])
    pred = truth + np.array([4.0, 0.0, -4.0, 2.0, 6.0, -2.0, 0.0, -6.0, 0.0])
    out = by_pairing("transfer", drivers, truth, pred)
    assert out["transfer_pairings"] == 3
    assert out["transfer_pairing1_mae"] == pytest.approx(2.0)  # a +4, b 0, c +2
    assert out["transfer_pairing2_mae"] == pytest.approx(4.0)  # a -4, b +6, c -2
    assert out["transfer_pairing3_mae"] == pytest.approx(2.0)  # a 0, b -6, c 0
    # each driver's mean: a 0, b 0, c 0 -> exact
    assert out["transfer_driver_mean_mae"] == pytest.approx(0.0)
    assert out["transfer_driver_mean_r2"] == pytest.approx(1.0)
    assert out["transfer_driver_mean_n"] == 3
    assert by_pairing("self", ["a", "b", "c"], truth[:3], pred[:3]) == {}  # one video each
