"""The label-free ED/ES detector on videos whose ED/ES are known by construction."""

import numpy as np
import pytest

from conftest import section
from echomotion.edes import (
    Beats,
    contraction_curve,
    detect_ed_es,
    heart_rate_bpm,
    heart_rate_or_default,
    nearest_error,
)
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.prepare.run import prepare_dataset


def beating(n=60, period=20, phase0=3, size=64, seed=0):
    """A dark 'ventricle' in a bright sector whose radius is largest at frames where
    (t - phase0) % period == 0 (ED) and smallest half a period later (ES)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for t in range(n):
        radius = 14 + 6 * np.cos(2 * np.pi * (t - phase0) / period)
        pool = (yy - 24) ** 2 + (xx - 32) ** 2 < radius**2
        img = np.where(pool, 20, 160) + rng.normal(0, 8, (size, size))
        frames.append(np.clip(img, 1, 255))
    return np.asarray(frames, dtype=np.uint8)


def test_detector_finds_every_ed_and_es():
    result = detect_ed_es(beating(), fps=25.0)
    interior = result.ed_all[(result.ed_all > 0) & (result.ed_all < 59)]
    assert len(interior) == 3 and nearest_error(interior, np.array([3, 23, 43])).max() <= 1
    interior = result.es_all[(result.es_all > 0) & (result.es_all < 59)]
    assert len(interior) == 3 and nearest_error(interior, np.array([13, 33, 53])).max() <= 1
    assert result.ed in (2, 3, 4, 22, 23, 24, 42, 43, 44)
    assert abs(result.es - result.ed) in (9, 10, 11)


def test_a_clip_edge_counts_as_ed_or_es_only_near_the_interior_extremes():
    # 60 frames, period 20: ED at 15, 35, 55 and ES at 5, 25, 45; frame 0 lies mid-systole
    mid_systole = detect_ed_es(beating(phase0=-5), fps=25.0)
    assert 0 not in mid_systole.ed_all and 0 not in mid_systole.es_all
    assert nearest_error(mid_systole.ed_all, np.array([15, 35, 55])).max() <= 1
    assert Beats(mid_systole.ed_all, 60, 25.0).window_anchors(31).min() >= 14  # not frame 0
    assert heart_rate_bpm(mid_systole.ed_all, 25.0) == pytest.approx(75.0, rel=0.06)
    at_ed = detect_ed_es(beating(phase0=0), fps=25.0)  # EchoNet clips often start at ED
    assert at_ed.ed_all.min() <= 1
    assert nearest_error(at_ed.ed_all, np.array([0, 20, 40, 60])).max() <= 1


def test_detector_on_a_still_video_finds_nothing():
    still = np.repeat(beating(1), 30, axis=0)
    assert detect_ed_es(still, fps=25.0).ed == -1


@pytest.mark.parametrize("mode", ["tracings", "auto"])
def test_prepare_mode_auto_ignores_tracings(tiny_dataset, tmp_path, mode):
    params = section("prepare", size=64, shard_frames=256, ed_es=mode)
    report = prepare_dataset(tiny_dataset["root"], params, tmp_path / "v.zarr", tmp_path / "r.csv")
    store = RaggedStore(tmp_path / "v.zarr")
    sources = set(store.table["ed_es_source"])
    assert sources == ({"tracings"} if mode == "tracings" else {"detector"})
    # the detector agrees with the phantom's tracings to within about a frame
    assert report.detector_vs_tracings_ed_frames <= 1.5
    assert report.detector_vs_tracings_es_frames <= 1.5


def test_true_ed_es_from_phase():
    from echomotion.tasks.edes_eval.run import true_ed_es

    phase = np.array([0.3, 0.0, 0.5, 1.0, 0.6, 0.1, 0.05, 0.4, 0.98, 0.9])
    ed, es = true_ed_es(phase)
    assert ed.tolist() == [1, 6] and es.tolist() == [3, 8]


def test_edes_eval_on_the_phantom(tiny_dataset):
    from echomotion.tasks.edes_eval.run import evaluate_ed_es

    metrics = evaluate_ed_es(tiny_dataset["videos"], tiny_dataset["truth"])
    assert metrics["ground_truth"] and metrics["videos"] == 8
    assert metrics["ed_error_frames"] <= 1.5 and metrics["es_error_frames"] <= 1.5
    assert metrics["videos_without_detection"] == 0
    assert metrics["first_ed_mid_cycle"] == 0.0 and metrics["heart_rate_error_bpm"] < 5.0


def window_anchors(video, fps, span):
    return Beats.detect(video, fps).window_anchors(span)


def test_window_anchors_are_the_detected_eds_a_full_window_fits_after():
    video = beating(n=60, period=20, phase0=3)  # ED at 3, 23, 43
    anchors = window_anchors(video, fps=25.0, span=31)  # starts up to frame 29
    assert nearest_error(anchors, np.array([3, 23])).max() <= 1 and len(anchors) == 2
    assert (anchors + 31 <= 60).all()


def test_window_anchors_fall_back_to_the_last_window_and_find_nothing_in_a_still_video():
    late = beating(n=40, period=40, phase0=20)  # one ED, at about frame 20; windows start <= 9
    assert window_anchors(late, fps=25.0, span=31).tolist() == [9]
    assert window_anchors(beating(n=20), fps=25.0, span=31).size == 0  # shorter than a window
    still = np.repeat(beating(1), 40, axis=0)
    assert window_anchors(still, fps=25.0, span=31).size == 0


def test_heart_rate_is_sixty_fps_over_the_median_ed_interval():
    assert heart_rate_bpm(np.array([3, 23, 43]), fps=25.0) == pytest.approx(75.0)
    assert heart_rate_bpm(np.array([40, 0, 21, 60]), fps=50.0) == pytest.approx(150.0)  # 20
    assert np.isnan(heart_rate_bpm(np.array([5]), fps=25.0))  # one ED: no interval
    assert np.isnan(heart_rate_bpm(np.array([3, 23]), fps=0.0))  # frame rate unknown


def test_beats_heart_rate_is_label_free_and_nan_for_a_still_video():
    for period, bpm in ((20, 75.0), (30, 50.0)):  # 25 fps
        video = beating(n=90, period=period, phase0=3)
        assert Beats.detect(video, fps=25.0).heart_rate == pytest.approx(bpm, rel=0.06)
    still = np.repeat(beating(1), 40, axis=0)
    assert np.isnan(Beats.detect(still, fps=25.0).heart_rate)


def test_window_anchors_take_already_detected_eds():
    video = beating(n=60, period=20, phase0=3)
    eds = np.asarray(detect_ed_es(video, 25.0).ed_all)
    given = Beats(eds, len(video), 25.0).window_anchors(31)
    assert given.tolist() == window_anchors(video, 25.0, 31).tolist()
    assert Beats(np.array([2, 40]), len(video), 25.0).window_anchors(31).tolist() == [2]  # 40 late


def test_one_detection_gives_a_videos_window_anchors_and_heart_rate(monkeypatch, caplog):
    video = beating(n=90, period=20, phase0=3)
    calls = []
    monkeypatch.setattr(
        "echomotion.edes.detect_ed_es", lambda *a: calls.append(a) or detect_ed_es(*a)
    )
    beats = Beats.detect(video, 25.0)
    assert beats.window_anchors(31).tolist() == [3, 23, 43]  # the true EDs
    assert beats.heart_rate == pytest.approx(75.0, rel=0.06)
    assert len(calls) == 1  # the anchors and the rate come from the one detection
    assert Beats(np.array([3]), 90, 25.0).window_anchors(100).size == 0  # no window fits
    assert heart_rate_or_default(72.0, "a.avi") == 72.0
    assert heart_rate_or_default(float("nan"), "still.avi") is None
    assert "still.avi: fewer than two EDs" in caplog.text


def test_the_contraction_curve_is_zero_at_ed_one_at_es_and_label_free():
    video = beating(n=60, period=20, phase0=3)  # ED at 3, 23, 43; ES at 13, 33, 53
    curve = contraction_curve(detect_ed_es(video, 25.0).signal)
    assert curve.shape == (60,) and curve.dtype == np.float32
    assert curve.min() == 0.0 and curve.max() == 1.0
    assert curve[[3, 23, 43]].max() < 0.1 and curve[[13, 33, 53]].min() > 0.9
    assert np.corrcoef(curve, -np.cos(2 * np.pi * (np.arange(60) - 3) / 20))[0, 1] > 0.95
    still = np.repeat(beating(1), 30, axis=0)
    assert not contraction_curve(detect_ed_es(still, 25.0).signal).any()  # no beat: all 0
    assert contraction_curve(np.array([])).shape == (0,)


def test_beats_give_the_contraction_of_the_frames_to_draw():
    video = beating(n=60, period=20, phase0=3)
    beats = Beats.detect(video, 25.0)
    curve = contraction_curve(detect_ed_es(video, 25.0).signal)
    assert np.array_equal(beats.contraction, curve)  # the one detection
    assert np.array_equal(beats.contraction_from(3, 5, 12.5), curve[[3, 5, 7, 9, 11]])
    assert np.array_equal(beats.contraction_from(57, 3), curve[[57, 58, 59]])  # own rate
    assert np.array_equal(
        beats.contraction_from(56, 4, 12.5), curve[[56, 58, 59, 59]]
    )  # past the end
    with pytest.raises(ValueError, match="no contraction curve"):
        Beats(beats.eds, 60, 25.0).contraction_from(0, 4)
