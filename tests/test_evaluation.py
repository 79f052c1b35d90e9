"""The evaluation library: Frechet distance, extractors, EF regressor, motion and privacy."""

from __future__ import annotations

import csv
from dataclasses import replace
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import special_ortho_group

from device_check import assert_runs_on, assert_runs_on_meta
from echomotion.echonet import TableError
from echomotion.evaluation.ef_regressor import (
    ArrayClipDataset,
    EFRegressor,
    bootstrap_intervals,
    ef_loss,
    predict_ef,
    regression_metrics,
)
from echomotion.evaluation.extractors import (
    EFClipFeatures,
    FeatureExtractor,
    ReIDFrameFeatures,
    TorchScriptFeatures,
    extract,
)
from echomotion.evaluation.frechet import frechet_distance, frechet_distance_from_stats
from echomotion.evaluation.motion_fidelity import (
    cosine_matrix,
    ed_es_or_detect,
    epe_matrix,
    matched_and_mismatched,
    motion_vectors,
    retrieval_top1,
    standardise,
)
from echomotion.evaluation.motion_scores import area_curve_distance
from echomotion.evaluation.params import TorchScriptExtractorParams
from echomotion.evaluation.privacy import (
    flag,
    max_similarity,
    privacy_threshold,
    similarity_histogram,
    video_embeddings,
    write_filtered_dataset,
)
from echomotion.evaluation.synthetic import SyntheticRecord, read_synthetic_table
from echomotion.evaluation.videos import (
    VideoSet,
    clip_frame_indices,
    draw_clips,
    draw_frames,
    gather_clips,
    gather_frames,
)
from echomotion.mafe.model import MAFE
from echomotion.mafe.params import MAFEModelParams
from echomotion.reid.model import ReIDEncoder
from echomotion.tasks.evaluate.transfer import ssim_scores
from echomotion.video import write_video

TINY_REID = {"widths": (8, 16), "blocks": (1, 1), "stem_stride": 2, "embedding_dim": 16}
TINY_EF = {"widths": (4, 8), "feature_dim": 8, "input_size": 32}
TINY_MAFE = MAFEModelParams(
    embed_dim=4, depths=(1, 1, 2, 2), num_heads=(1, 2), window_size=4, reid_dim=8
)
# an inference path run on the CPU to the end, and on the meta device until it needs data
# on the host: every module call had its weights and inputs on the device given
# (tests/device_check.py); each run builds its own model, since the meta device drops weights
ON_DEVICE = [
    pytest.param(partial(assert_runs_on, "cpu"), id="cpu"),
    pytest.param(assert_runs_on_meta, id="meta"),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def videos(n: int = 4, length: int = 12, size: int = 32, seed: int = 0) -> VideoSet:
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (length + i, size, size), dtype=np.uint8) for i in range(n)]
    return VideoSet.from_arrays([f"v{i}" for i in range(n)], arrays)


# ------------------------------------------------------------------------------- Frechet


def closed_form(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), by eigendecompositions."""
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2) - 2 * np.sqrt(inner.clip(0)).sum())


def test_frechet_diagonal_gaussians_exact_on_moments():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 4 + 0 + (1 + 4 - 4) + (4 + 1 - 4) + (9 + 9 - 18)  # = 7
    got = frechet_distance_from_stats(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, abs=1e-9)


def test_frechet_full_covariances_match_the_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    got = frechet_distance_from_stats(mu1, s1, mu2, s2)
    assert got == pytest.approx(closed_form(mu1, s1, mu2, s2), rel=1e-8)


def test_frechet_from_samples_converges_to_the_closed_form():
    rng = np.random.default_rng(2)
    rot = special_ortho_group.rvs(4, random_state=3)
    s1, s2 = np.diag([1.0, 2.0, 0.5, 3.0]), rot @ np.diag([2.0, 1.0, 1.0, 0.5]) @ rot.T
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, -1.0, 0.5])
    exact = closed_form(mu1, s1, mu2, s2)

    def mean_error(n: int, repeats: int) -> float:
        draws = [
            frechet_distance(
                rng.multivariate_normal(mu1, s1, n), rng.multivariate_normal(mu2, s2, n)
            )
            for _ in range(repeats)
        ]
        return abs(np.mean(draws) - exact)

    large = mean_error(20000, 3)
    assert large < 0.03 * exact
    assert large < mean_error(30, 20)  # small samples: biased upwards by O(D / n)


@pytest.mark.parametrize("n,d", [(50, 4), (10, 32)])  # the second: singular covariance
def test_frechet_is_zero_for_identical_sets(n, d):
    x = np.random.default_rng(3).normal(size=(n, d))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + 1.0) == pytest.approx(d, rel=1e-6)  # pure mean shift


def test_frechet_rejects_mismatched_features():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros((5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.ones((5, 3)))


# ------------------------------------------------------------------------------ extractors


class StandIn(torch.nn.Module):
    """A random stand-in for StyleGAN-V's TorchScript Inception / I3D detectors."""

    def __init__(self, channels: int):
        super().__init__()
        self.proj = torch.nn.Linear(channels, 6)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = x.flatten(2).mean(dim=2)  # (N, C): frames (N,C,H,W) or clips (N,C,T,H,W)
        if not return_features:
            return torch.softmax(self.proj(pooled), dim=1)
        return torch.cat([pooled, self.proj(pooled)], dim=1)


def test_torchscript_extractor_frames_and_clips(tmp_path):
    path = tmp_path / "standin.pt"
    torch.jit.save(torch.jit.script(StandIn(3)), str(path))
    params = TorchScriptExtractorParams(
        path=str(path), size=20, value_range="byte", call_kwargs={"return_features": True}
    )
    frames = TorchScriptFeatures(params, "frame", "cpu")
    assert frames.preprocess(torch.ones(2, 1, 8, 8)).shape == (2, 3, 20, 20)
    out = frames(torch.ones(2, 1, 8, 8))
    assert out.shape == (2, 9) and torch.allclose(out[:, :3], torch.full((2, 3), 255.0))
    symmetric = params.model_copy(update={"value_range": "symmetric"})
    clips = TorchScriptFeatures(symmetric, "clip", "cpu")
    assert clips.preprocess(torch.zeros(2, 5, 1, 8, 8)).shape == (2, 3, 5, 20, 20)
    assert torch.allclose(clips(torch.zeros(2, 5, 1, 8, 8))[:, :3], -torch.ones(2, 3))
    with pytest.raises(FileNotFoundError):
        missing = params.model_copy(update={"path": str(tmp_path / "no.pt")})
        TorchScriptFeatures(missing, "clip", "cpu")


def test_default_extractors_give_features_per_item():
    torch.manual_seed(0)
    reid = ReIDFrameFeatures(ReIDEncoder(**TINY_REID), "cpu")
    feats = extract(reid, np.zeros((5, 32, 32), np.uint8), batch_size=2)
    assert feats.shape == (5, 16) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    clip = EFClipFeatures(EFRegressor(**TINY_EF), "cpu")
    assert extract(clip, np.zeros((3, 6, 32, 32), np.uint8), batch_size=2).shape == (3, 8)
    with pytest.raises(ValueError, match="clip extractor"):
        extract(clip, np.zeros((3, 32, 32), np.uint8), batch_size=2)


def extractor_of(kind: str, device: str, tmp_path) -> FeatureExtractor:
    if kind == "reid":
        return ReIDFrameFeatures(ReIDEncoder(**TINY_REID), device)
    if kind == "efnet":
        return EFClipFeatures(EFRegressor(**TINY_EF), device)
    path = tmp_path / "standin.pt"
    torch.jit.save(torch.jit.script(StandIn(3)), str(path))
    return TorchScriptFeatures(TorchScriptExtractorParams(path=str(path), size=20), "clip", device)


@pytest.mark.parametrize("check", ON_DEVICE)
@pytest.mark.parametrize("kind", ["reid", "efnet", "torchscript"])
def test_extract_runs_on_the_extractors_device(check, kind, tmp_path):
    items = np.zeros((3, 32, 32) if kind == "reid" else (3, 6, 32, 32), np.uint8)
    check(lambda d: extract(extractor_of(kind, d, tmp_path), items, batch_size=2))


# ------------------------------------------------------------------------------ sampling


def test_draws_are_distinct_in_bounds_and_seeded():
    vs = videos()
    pairs = draw_frames(vs, 20, np.random.default_rng(0))
    assert len(pairs) == 20 and len({tuple(p) for p in pairs}) == 20
    assert (pairs[:, 1] < vs.lengths[pairs[:, 0]]).all()
    assert np.array_equal(pairs, draw_frames(vs, 20, np.random.default_rng(0)))
    assert len(draw_frames(vs, 10**6, np.random.default_rng(0))) == vs.lengths.sum()
    clips = draw_clips(vs, 30, 10, np.random.default_rng(1))
    assert (clips[:, 1] + 10 <= vs.lengths[clips[:, 0]]).all()
    frames = gather_frames(vs, pairs)
    assert np.array_equal(frames[3], vs.read(int(pairs[3, 0]))[pairs[3, 1]])
    got = gather_clips(vs, clips, 10)
    v, s = clips[5]
    assert got.shape == (30, 10, 32, 32) and np.array_equal(got[5], vs.read(int(v))[s : s + 10])


def test_short_videos_are_stretched_over_a_clip():
    assert clip_frame_indices(4, 0, 7).tolist() == [0, 0, 1, 2, 2, 2, 3]  # half to even
    assert clip_frame_indices(20, 5, 3).tolist() == [5, 6, 7]


# --------------------------------------------------------------------------- EF regressor


def test_ef_regressor_shapes_round_trip_and_loss(tmp_path):
    torch.manual_seed(0)
    model = EFRegressor(**TINY_EF)
    clips = torch.rand(2, 6, 1, 40, 40)
    out = model(clips)
    assert out["ef"].shape == (2,) and out["features"].shape == (2, 8)
    model.save_pretrained(tmp_path)
    loaded = EFRegressor.from_pretrained(tmp_path)
    assert torch.allclose(loaded(clips)["ef"], out["ef"])
    loss, logs = ef_loss(model, {"frames": clips, "ef": out["ef"].detach() + 12.0})
    assert loss.item() == pytest.approx(1.0, rel=1e-5) and logs["mae"] == pytest.approx(12.0)
    with pytest.raises(ValueError, match="expected"):
        model(torch.rand(2, 1, 40, 40))


def test_array_clip_dataset_is_seeded_by_epoch_and_index():
    vs = videos(n=2, length=30)
    ds = ArrayClipDataset([vs.read(0), vs.read(1)[:5]], [40.0, 60.0], length=8, seed=3)
    a, b = ds[0]["frames"], ds[0]["frames"]
    assert a.shape == (8, 1, 32, 32) and torch.equal(a, b)
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        starts.add(float(ds[0]["frames"].sum()))
    assert len(starts) > 1
    assert ds[1]["frames"].shape == (8, 1, 32, 32) and float(ds[1]["ef"]) == 60.0


def test_predict_ef_averages_clips_per_video():
    torch.manual_seed(0)
    model = EFRegressor(**TINY_EF)
    vs = videos(n=3, length=20)
    pred = predict_ef(model, vs, length=8, clips_per_video=2, batch_size=4, device="cpu")
    first = gather_clips(vs, np.array([[0, 0], [0, 12]]), 8)
    direct = model(torch.from_numpy(first).float().div(255).unsqueeze(2))["ef"].mean()
    assert pred.shape == (3,) and pred[0] == pytest.approx(float(direct), rel=1e-5)


@pytest.mark.parametrize("check", ON_DEVICE)
def test_predict_ef_runs_on_the_given_device(check):
    vs = videos(n=2, length=10)
    check(lambda d: predict_ef(EFRegressor(**TINY_EF), vs, 8, 2, batch_size=2, device=d))


def test_regression_metrics():
    truth = np.array([30.0, 50.0, 70.0])
    exact = regression_metrics(truth, truth)
    assert exact == {"mae": 0.0, "rmse": 0.0, "r2": 1.0, "n": 3, "bias": 0.0, "r": exact["r"]}
    assert exact["r"] == pytest.approx(1.0)
    shifted = regression_metrics(truth, truth - 30.0)  # ranks right, sits 30 below
    assert shifted["bias"] == -30.0 and shifted["r"] == pytest.approx(1.0)
    assert shifted["r2"] == pytest.approx(1 - 3 * 900 / 800) and shifted["mae"] == 30.0
    assert np.isnan(regression_metrics(truth, np.full(3, 5.0))["r"])  # constant prediction
    mean = regression_metrics(truth, np.full(3, 50.0))
    assert mean["r2"] == pytest.approx(0.0) and mean["mae"] == pytest.approx(40 / 3)
    assert np.isnan(regression_metrics(truth[:1], truth[:1])["r2"])


# ---------------------------------------------------------------------------------- motion


def test_cosine_and_matched_vs_mismatched_pairs():
    sim = cosine_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), np.eye(2))
    assert np.allclose(sim, [[1, 0], [0, 1], [2**-0.5, 2**-0.5]])
    matrix = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.8], [0.5, 0.7, 0.6]])
    matched, other = matched_and_mismatched(matrix, ["a", "b", "b"])
    assert np.allclose(matched, [0.9, 0.8, 0.6])
    assert np.allclose(other, [0.2, 0.2, 0.5])  # row 1 and 2 share source b
    assert retrieval_top1(matrix, ["a", "b", "b"]) == 1.0
    assert retrieval_top1(matrix, ["a", "b", "c"]) == pytest.approx(2 / 3)
    _, alone = matched_and_mismatched(np.ones((2, 2)), ["a", "a"])
    assert np.isnan(alone).all()
    assert np.allclose(standardise(np.array([[3.0, 4.0]]), [1.0, 2.0], [2.0, 0.0])[0, 0], 1.0)


def test_epe_matrix_is_the_mean_end_point_error_of_every_pair():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 2, 8, 8)), rng.normal(size=(3, 2, 8, 8))
    m = epe_matrix(a, b)
    epe_12 = np.sqrt(((a[1] - b[2]) ** 2).sum(axis=0)).mean()
    assert m.shape == (2, 3) and m[1, 2] == pytest.approx(epe_12)
    assert np.allclose(np.diagonal(epe_matrix(a, a)), 0)


def test_ed_es_given_or_detected(tiny_dataset):
    from echomotion.edes import detect_ed_es
    from echomotion.stores.ragged import RaggedStore

    store = RaggedStore(tiny_dataset["videos"])
    frames, fps = store.video(0), float(store.table["fps"][0])
    assert ed_es_or_detect(frames, 3, 9, fps) == (3, 9)
    found = detect_ed_es(frames, fps)
    got = ed_es_or_detect(frames, -1, -1, fps)
    assert got == ((found.ed, found.es) if found.ed >= 0 and found.es >= 0 else None)
    assert ed_es_or_detect(frames, 2, len(frames) + 5, fps) == got  # out of range: detected


@pytest.mark.parametrize("check", ON_DEVICE)
def test_motion_vectors_run_on_the_given_device(check):
    frames = videos(n=1, length=4).read(0)  # (4, 32, 32)
    mafe = partial(MAFE.from_params, TINY_MAFE)
    check(lambda d: motion_vectors(mafe(), frames[:3], frames[1:], batch_size=2, device=d))


# --------------------------------------------------------------------------------- privacy


def test_privacy_threshold_and_flagged_fraction_on_hand_built_similarities():
    gallery = np.eye(4)  # TRAIN embeddings: similarities are the query coordinates
    real = np.array([[0.6, 0.8, 0, 0], [0, 0, 0.28, 0.96], [1, 0, 0, 0]])
    best, nearest = max_similarity(real, gallery)
    assert np.allclose(best, [0.8, 0.96, 1.0]) and nearest.tolist() == [1, 3, 0]
    maxima = np.arange(1, 101) / 100  # 0.01 .. 1.00
    threshold = privacy_threshold(maxima, 95)
    assert threshold == pytest.approx(0.9505)
    synthetic = np.array([0.5, 0.96, 0.99, 0.95])
    flagged = flag(synthetic, threshold)
    assert flagged.tolist() == [False, True, True, False] and flagged.mean() == 0.5
    assert not flag(np.array([threshold]), threshold)[0]  # strictly above only


def test_video_embeddings_are_unit_means():
    torch.manual_seed(0)
    encoder = ReIDEncoder(**TINY_REID).eval()
    vs = videos(n=2, length=6)
    emb = video_embeddings(encoder, vs, frames_per_video=3, batch_size=2, device="cpu")
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1)
    frames = torch.from_numpy(vs.read(0)[[0, 2, 5]]).float().div(255)[:, None]
    mean = encoder.embed(frames).mean(0)
    assert np.allclose(emb[0], (mean / mean.norm()).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("check", ON_DEVICE)
def test_video_embeddings_run_on_the_given_device(check):
    vs = videos(n=2, length=6)
    check(lambda d: video_embeddings(ReIDEncoder(**TINY_REID), vs, 3, batch_size=2, device=d))


def test_similarity_histogram_counts_every_value():
    rows = similarity_histogram({"a": np.array([0.1, 0.9, 1.0]), "b": np.array([-1.0])}, 4)
    assert [r["similarity"] for r in rows] == [-0.75, -0.25, 0.25, 0.75]
    assert [r["a"] for r in rows] == [0, 0, 1, 2] and sum(r["b"] for r in rows) == 1


def write_synthetic_root(root, names, extra_rows=(), columns=None):
    (root / "Videos").mkdir(parents=True)
    columns = columns or ["FileName", "EF", "Split", "MotionSource", "AppearanceSource", "Mode"]
    rows = [{"FileName": n, "EF": "50", "Split": "TEST", "MotionSource": "real0",
             "AppearanceSource": "real1", "Mode": "transfer"} for n in names]  # fmt: skip
    rows += list(extra_rows)
    with (root / "FileList.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for n in names:
        write_video(root / "Videos" / f"{n}.avi", np.zeros((4, 16, 16), np.uint8), 25)
    return root


def test_filtered_dataset_keeps_only_unflagged_videos(tmp_path):
    src = write_synthetic_root(tmp_path / "syn", ["s0", "s1", "s2"])
    with (src / "VolumeTracings.csv").open("w") as f:
        f.write("FileName,X1,Y1,X2,Y2,Frame\ns0.avi,1,1,2,2,0\ns1.avi,1,1,2,2,0\n")
    n = write_filtered_dataset(src, tmp_path / "private", {"s0", "s2"})
    out = tmp_path / "private"
    assert n == 2 and sorted(p.name for p in (out / "Videos").iterdir()) == ["s0.avi", "s2.avi"]
    assert [r["FileName"] for r in read_synthetic_rows(out)] == ["s0", "s2"]
    assert (out / "VolumeTracings.csv").read_text().count("s1.avi") == 0
    assert not (tmp_path / ".private.tmp").exists()


def read_synthetic_rows(root):
    with (root / "FileList.csv").open() as f:
        return list(csv.DictReader(f))


def test_synthetic_table_needs_its_columns_and_skips_real_rows(tmp_path):
    cols = ["FileName", "MotionSource", "AppearanceSource", "Mode", "Synthetic", "ED", "ES"]
    real = {"FileName": "r0", "MotionSource": "r0", "AppearanceSource": "r0", "Mode": "self",
            "Synthetic": "False"}  # fmt: skip
    root = write_synthetic_root(tmp_path / "a", ["s0"], [real], columns=cols)
    records = read_synthetic_table(root)
    assert [r.file_name for r in records] == ["s0"] and records[0].ed == -1
    bad = write_synthetic_root(tmp_path / "b", ["s0"], columns=["FileName", "EF"])
    with pytest.raises(TableError, match="MotionSource"):
        read_synthetic_table(bad)


def test_retrieval_can_leave_each_rows_appearance_source_out():
    """Transfer videos that look like their appearance source: rows 0 and 1 are most
    similar to the column of their appearance source (c, a), second most to their driver."""
    sim = np.array([[0.2, 0.1, 0.9], [0.9, 0.5, 0.1], [0.1, 0.2, 0.8]])
    sources, appearance = ["a", "b", "c"], ["c", "a", "b"]
    assert retrieval_top1(sim, sources) == pytest.approx(1 / 3)  # only row 2
    assert retrieval_top1(sim, sources, appearance) == 1.0
    # a row whose appearance source is its own driver (self mode) keeps its column
    assert retrieval_top1(sim, sources, ["a", "b", "c"]) == pytest.approx(1 / 3)


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_agreement():
    rng = np.random.default_rng(0)
    truth = np.linspace(20.0, 75.0, 8)
    noisy = truth + np.random.default_rng(1).normal(0, 10, 8)
    ci = bootstrap_intervals(truth, noisy, 2000, np.random.default_rng(0))
    point = regression_metrics(truth, noisy)
    assert ci["r2_ci_low"] < point["r2"] < ci["r2_ci_high"] <= 1
    assert ci["mae_ci_low"] < point["mae"] < ci["mae_ci_high"]
    # the same generator state gives the same interval; another draw, another one
    assert ci == bootstrap_intervals(truth, noisy, 2000, np.random.default_rng(0))
    assert ci != bootstrap_intervals(truth, noisy, 2000, rng.spawn(1)[0])
    # perfect predictions: no spread; constant-truth draws are left out of R-squared
    exact = bootstrap_intervals(truth, truth, 500, np.random.default_rng(0))
    assert exact == {"mae_ci_low": 0.0, "mae_ci_high": 0.0, "r2_ci_low": 1.0, "r2_ci_high": 1.0}
    # closer predictions, a narrower interval
    close = bootstrap_intervals(truth, truth + (noisy - truth) / 4, 2000, np.random.default_rng(0))
    assert close["r2_ci_high"] - close["r2_ci_low"] < ci["r2_ci_high"] - ci["r2_ci_low"]
    # too few pairs, or no resamples: NaN, not an interval
    for args in ((truth[:1], noisy[:1], 100), (truth, noisy, 0)):
        interval = bootstrap_intervals(*args, np.random.default_rng(0))
        assert all(np.isnan(v) for v in interval.values())


def test_bootstrap_by_group_draws_whole_drivers():
    """Three videos per driver with their driver's error: drawn by driver, the interval is
    that of 6 drivers, wider than the same 18 pairs drawn as if independent."""
    truth = np.repeat(np.linspace(20.0, 75.0, 6), 3)
    pred = truth + np.repeat(np.random.default_rng(1).normal(0, 8, 6), 3)
    drivers = np.repeat(list("abcdef"), 3)
    grouped = bootstrap_intervals(truth, pred, 2000, np.random.default_rng(0), groups=drivers)
    pairs = bootstrap_intervals(truth, pred, 2000, np.random.default_rng(0))
    point = regression_metrics(truth, pred)
    assert grouped["mae_ci_low"] < point["mae"] < grouped["mae_ci_high"]
    width = {k: v["mae_ci_high"] - v["mae_ci_low"] for k, v in (("g", grouped), ("p", pairs))}
    assert width["g"] > 1.3 * width["p"]
    # one video per group: the same draws, so the same interval as without groups
    same = bootstrap_intervals(truth, pred, 500, np.random.default_rng(0), groups=np.arange(18))
    assert same == bootstrap_intervals(truth, pred, 500, np.random.default_rng(0))
    # a single group has no spread to draw from
    alone = bootstrap_intervals(truth, pred, 100, np.random.default_rng(0), groups=["a"] * 18)
    assert all(np.isnan(v) for v in alone.values())


def test_synthetic_table_reads_the_drivers_motion_start(tmp_path):
    cols = ["FileName", "MotionSource", "AppearanceSource", "Mode", "MotionStart"]
    root = write_synthetic_root(tmp_path / "a", ["s0"], columns=cols)
    assert read_synthetic_table(root)[0].motion_start == 0  # empty cell: the first frame
    with (root / "FileList.csv").open("w", newline="") as f:
        f.write("FileName,MotionSource,AppearanceSource,Mode,MotionStart\ns0,real0,real1,self,7\n")
    assert read_synthetic_table(root)[0].motion_start == 7


def test_self_mode_ssim_compares_from_the_frame_the_video_started_at():
    rng = np.random.default_rng(0)
    driver, other = rng.integers(0, 255, (2, 12, 16, 16), dtype=np.uint8)
    table = {"fps": np.array([25.0, 25.0]), "split": np.array(["TEST", "TEST"]),
             "file_name": np.array(["d0", "o1"])}  # fmt: skip
    record = SyntheticRecord("g", "d0", "d0", "self", 25.0, -1, -1, motion_start=5)
    data = SimpleNamespace(
        store=SimpleNamespace(table=table, video=lambda r: (driver, other)[r]),
        records=[record],
        synthetic=SimpleNamespace(read=lambda i: driver[5:9]),  # the driver from frame 5
        split_rows=lambda split: np.array([0, 1]),
    )
    assert ssim_scores(data)["self_matched"] == pytest.approx(1.0)
    data.records = [replace(record, motion_start=0)]
    assert ssim_scores(data)["self_matched"] < 0.5


def test_the_lv_area_curve_distance_sees_contraction_and_timing_not_size():
    t = np.arange(40) / 25.0
    beat = 1.0 - 0.4 * np.sin(np.pi * t / 0.8).clip(0)  # relative area, ED = 1
    assert area_curve_distance(900 * beat, 25.0, 1500 * beat, 25.0) == pytest.approx(0.0)
    # the same curve sampled at half the rate, against the full one: still the same motion
    assert area_curve_distance(900 * beat[::2], 12.5, 1500 * beat, 25.0) == pytest.approx(0.0)
    weaker = 1.0 - 0.2 * np.sin(np.pi * t / 0.8).clip(0)  # half the contraction
    slower = 1.0 - 0.4 * np.sin(np.pi * t / 1.2).clip(0)
    assert area_curve_distance(weaker, 25.0, beat, 25.0) > 0.05
    assert area_curve_distance(slower, 25.0, beat, 25.0) > 0.05
    # only the generated curve's span within the driver's is compared
    assert area_curve_distance(beat, 25.0, beat[:20], 25.0) == pytest.approx(0.0)
