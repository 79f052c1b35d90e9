"""The exact phantom transfer (one video's anatomy, another's motion) and the
``transfer_oracle`` stage that scores it with the evaluation's motion measures."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_tasks_evaluate import TINY_MAFE, write_features, write_store

from conftest import section
from echomotion.evaluation.lv import LVSegmenter, lv_areas, raw_ef
from echomotion.evaluation.motion_scores import curve_summary, motion_summary
from echomotion.evaluation.params import LVSegmenterParams
from echomotion.evaluation.synthetic import SyntheticRecord
from echomotion.flow.classical import make_flow_provider
from echomotion.flow.params import FlowProviderParams
from echomotion.mafe.model import MAFE
from echomotion.phantom.anatomy import LABELS
from echomotion.phantom.simulate import simulate_video
from echomotion.phantom.transfer import simulate_transfer
from echomotion.phantom.writer import file_name
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.transfer_oracle.run import (
    Phantom,
    Scorers,
    generated_window,
    lv_calibration,
    oracle_scores,
)

SMALL = section("phantom", n_videos=4, duration_s=(0.9, 1.0), size=64)
# the tiny_dataset fixture's phantom, and how it was prepared (conftest)
TINY = Phantom(section("phantom", n_videos=8, duration_s=(1.8, 1.8), size=112), 7, 64, 25.0, True)

pytestmark = pytest.mark.usefixtures("one_thread")


def lv_area(labels: np.ndarray) -> np.ndarray:
    return (labels == LABELS["LV"]).sum(axis=(1, 2)).astype(float)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_a_video_transferred_onto_itself_is_that_video():
    video, same = simulate_video(SMALL, 11, 1), simulate_transfer(SMALL, 11, 1, 1)
    assert np.array_equal(same.frames, video.frames)
    assert np.array_equal(same.labels, video.labels)
    assert (same.ed, same.es) == (video.ed_frame, video.es_frame)


def test_the_transfer_moves_the_references_anatomy_as_the_driver_moves():
    """Video 0 (EF 38 %, 89 bpm) driven by video 3 (EF 63 %, 58 bpm): the driver's
    timeline and LV-area curve, on the reference's LV."""
    reference, driver = simulate_video(SMALL, 11, 0), simulate_video(SMALL, 11, 3)
    moved = simulate_transfer(SMALL, 11, 0, 3)
    assert len(moved.frames) == len(driver.frames)
    assert (moved.ed, moved.es) == (driver.ed_frame, driver.es_frame)
    relative = lv_area(moved.labels) / lv_area(moved.labels)[moved.ed]
    driven = lv_area(driver.labels) / lv_area(driver.labels)[driver.ed_frame]
    own = lv_area(reference.labels) / lv_area(reference.labels)[reference.ed_frame]
    assert np.abs(relative - driven).max() < 0.03
    assert relative.min() < own.min() - 0.1  # the driver contracts more than the reference
    lv = LABELS["LV"]
    at_ed = moved.labels[moved.ed] == lv
    assert iou(at_ed, reference.labels[reference.ed_frame] == lv) > 0.97
    assert iou(at_ed, driver.labels[driver.ed_frame] == lv) < 0.9


def test_a_prepared_transfer_onto_itself_is_the_prepared_video(tiny_dataset, tmp_path):
    """Same codec, decoding, resizing and resampling as `prepare`: byte for byte."""
    videos = RaggedStore(tiny_dataset["videos"])
    row = list(videos.table["file_name"]).index(file_name(TINY.seed, 3))
    assert np.array_equal(TINY.prepared_transfer(3, 3, tmp_path), videos.video(row))


def test_the_generated_window_is_cut_from_the_motion_start_at_the_records_rate():
    video = np.arange(20)[:, None, None] * np.ones((1, 2, 2), int)
    record = SyntheticRecord("g", "d", "a", "transfer", 12.5, -1, -1, motion_start=3)
    window = generated_window(video, 25.0, record.rate(25.0), record.motion_start, 16)
    assert window[:, 0, 0].tolist() == [3, 5, 7, 9, 11, 13, 15, 17, 19]  # as far as it goes


def transfer_records(store: RaggedStore, appearance_of) -> list[SyntheticRecord]:
    """Transfer-mode records of the 3 TEST videos, whole videos at the store's rate."""
    t, names = store.table, store.table["file_name"].astype(str)
    return [
        SyntheticRecord(f"gen_{d}", names[d], names[appearance_of(d)], "transfer", 25.0,
                        int(t["ed"][d]), int(t["es"][d]), 0, int(t["n_frames"][d]))
        for d in (5, 6, 7)
    ]  # fmt: skip


@pytest.fixture
def oracle_inputs(tiny_dataset, tmp_path):
    store = write_store(tiny_dataset, tmp_path / "videos.zarr")  # 4 TRAIN, 1 VAL, 3 TEST
    mafe = MAFE.from_params(TINY_MAFE).eval()
    write_features(store, mafe, tmp_path / "features.zarr")
    torch.manual_seed(0)
    lv = LVSegmenter.from_params(LVSegmenterParams(widths=(4, 8), input_size=32)).eval()
    provider = make_flow_provider(FlowProviderParams(method="dis"))
    return store, RaggedStore(tmp_path / "features.zarr"), Scorers(mafe, provider, lv, 4, "cpu")


def test_a_video_transferred_onto_itself_is_its_driver_by_every_measure(oracle_inputs):
    """Appearance = driver: the exact transfer is the prepared driver, so every measure
    finds it at distance 0; the test that the oracle scores with the evaluation's code."""
    store, features, scorers = oracle_inputs
    scores = oracle_scores(store, features, transfer_records(store, lambda d: d), scorers, TINY)
    assert scores["ground_truth"] is True and scores["n_videos"] == 3
    assert scores["flow_epe_matched"] == pytest.approx(0.0, abs=1e-6)
    assert scores["curve_distance_matched"] == pytest.approx(0.0, abs=1e-9)
    assert scores["cosine_matched"] == pytest.approx(1.0, abs=1e-4)
    for key in ("flow_retrieval_top1", "curve_retrieval_top1", "retrieval_top1"):
        assert scores[key] == 1.0, key


def test_the_oracle_scores_every_transfer_video(oracle_inputs):
    store, features, scorers = oracle_inputs
    records = transfer_records(store, lambda d: 5 + (d - 4) % 3)  # 5 <- 6, 6 <- 7, 7 <- 5
    scores = oracle_scores(store, features, records, scorers, TINY)
    assert scores["ground_truth"] is True and scores["n_videos"] == 3
    square, names = np.ones((3, 3)), ["a", "b", "c"]
    keys = set(motion_summary(square, square, square, names, names))
    assert keys | set(curve_summary(square, names, names)) < set(scores)
    assert scores["flow_epe_matched"] > 0 and scores["curve_distance_matched"] > 0
    self_mode = [replace(r, mode="self") for r in records]
    assert oracle_scores(store, features, self_mode, scorers, TINY)["skipped"] == (
        "no transfer video"
    )
    no_lv = replace(scorers, lv=None)
    assert not any(
        k.startswith("curve_") for k in oracle_scores(store, features, records, no_lv, TINY)
    )


def test_the_oracle_reads_each_exact_transfers_ef_with_the_evaluations_estimator(
    oracle_inputs, tmp_path
):
    """With the estimator's calibration (read from evaluate's metrics), ``ef_*`` score the
    EF the LV-area estimator reads from each exact transfer against its driver's EF; a
    transfer onto itself is the driver's own window, so its EF is the estimator's reading
    of that window. Without a calibration (or an LV segmenter) there are no ``ef_*`` keys."""
    store, features, scorers = oracle_inputs
    metrics = tmp_path / "eval.json"
    metrics.write_text(json.dumps({"ef_lv": {"calibration_a": 5.0, "calibration_b": 0.8}}))
    calibrated = replace(scorers, ef_calibration=lv_calibration(metrics, 1.5))
    assert calibrated.ef_calibration == (5.0, 0.8, 1.5)
    records = transfer_records(store, lambda d: d)
    scores = oracle_scores(store, features, records, calibrated, TINY)
    truth = np.array([store.table["ef"][d] for d in (5, 6, 7)], float)
    read = np.array([
        5.0 + 0.8 * raw_ef(lv_areas(scorers.lv, store.video(d), 4, device="cpu"), 1.5)
        for d in (5, 6, 7)
    ])  # fmt: skip
    assert scores["ef_n"] == 3
    assert scores["ef_mae"] == pytest.approx(np.abs(read - truth).mean())
    assert scores["ef_bias"] == pytest.approx((read - truth).mean())
    assert not any(k.startswith("ef_") for k in oracle_scores(store, features, records, scorers,
                                                              TINY))  # fmt: skip
    no_lv = replace(calibrated, lv=None)
    assert not any(k.startswith("ef_") for k in oracle_scores(store, features, records, no_lv,
                                                              TINY))  # fmt: skip
    assert lv_calibration(tmp_path / "missing.json", 1.5) is None
    metrics.write_text(json.dumps({"ef_lv": {"skipped": "no tracings"}}))
    assert lv_calibration(metrics, 1.5) is None


def test_the_oracle_is_skipped_on_videos_that_are_not_the_phantoms(oracle_inputs):
    store, features, scorers = oracle_inputs
    records = transfer_records(store, lambda d: 5 + (d - 4) % 3)
    other_seed = replace(TINY, seed=TINY.seed + 1)
    assert oracle_scores(store, features, records, scorers, other_seed) == {
        "ground_truth": False, "skipped": "3 videos are not the phantom's", "n_videos": 0
    }  # fmt: skip
