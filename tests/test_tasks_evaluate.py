"""Stage ``evaluate`` on fakes of its inputs: the declared outputs, schemas and metrics.

The fake synthetic set is built so that some answers are known: ``self_*`` videos are
lossless copies of real TEST videos driven by their own motion (a perfect generator:
cosine 1, flow EPE 0), ``copy_*`` videos are copies of TRAIN videos (privacy must flag
them).
"""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import section
from device_check import assert_runs_on, assert_runs_on_meta
from echomotion.evaluation.ef_regressor import EFRegressor
from echomotion.evaluation.lv import LVSegmenter
from echomotion.evaluation.motion_fidelity import pair_flows
from echomotion.evaluation.motion_scores import motion_summary
from echomotion.evaluation.params import (
    EFRegressorParams,
    LVSegmenterParams,
    TorchScriptExtractorParams,
)
from echomotion.flow.params import FlowProviderParams
from echomotion.flow.pwc import PWCLite
from echomotion.mafe.model import MAFE
from echomotion.mafe.params import MAFEModelParams
from echomotion.reid.model import ReIDEncoder
from echomotion.stage import write_json
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.tasks.evaluate.data import EvaluatePaths, load_data
from echomotion.tasks.evaluate.ef import ef_scores
from echomotion.tasks.evaluate.lv import lv_scores, segmentation_scores, traced_sets
from echomotion.tasks.evaluate.params import (
    EFParams,
    EvaluateParams,
    LVParams,
    MotionParams,
    PrivacyParams,
    RealismParams,
)
from echomotion.tasks.evaluate.run import evaluate, extractors_for, flow_provider
from echomotion.tasks.evaluate.scores import (
    motion_scores,
    privacy_scores,
    realism_scores,
)
from echomotion.tasks.evaluate.transfer import appearance_scores
from echomotion.training.params import TrainParams
from echomotion.video import write_video

SPLITS = ["TRAIN"] * 4 + ["VAL"] + ["TEST"] * 3
TINY_MAFE = MAFEModelParams(
    embed_dim=4, depths=(1, 1, 2, 2), num_heads=(1, 2), window_size=4, reid_dim=8
)
SYNTHETIC_COLUMNS = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                     "NumberOfFrames", "Split", "Synthetic", "MotionSource", "AppearanceSource",
                     "Mode", "ED", "ES"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


class StandIn(torch.nn.Module):
    """Random stand-in of a TorchScript Inception / I3D detector."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 4)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = x.flatten(2).std(dim=2)  # (N, 3)
        return torch.cat([pooled, torch.tanh(self.proj(pooled))], dim=1)


def write_store(tiny_dataset, path):
    """The tiny prepared store with 4 TRAIN, 1 VAL and 3 TEST videos."""
    src = RaggedStore(tiny_dataset["videos"])
    with RaggedStoreWriter(path, {"frames": ((64, 64), "uint8")}, 256, 16) as writer:
        for i in range(len(src)):
            row = src.row(i) | {"split": SPLITS[i]}
            writer.append({"frames": src.video(i)}, **row)
    return RaggedStore(path)


@torch.no_grad()
def write_features(store: RaggedStore, mafe: MAFE, path):
    """features.zarr of every video: MAFE motion of its ED/ES pair."""
    rows = range(len(store))
    pairs = [store.video(i)[[store.table["ed"][i], store.table["es"][i]]] for i in rows]
    x = torch.from_numpy(np.stack(pairs)).float().div(255)[:, :, None]  # (N, 2, 1, H, W)
    motion = mafe.motion_vector(x[:, 0], x[:, 1]).numpy()
    train = motion[[s == "TRAIN" for s in SPLITS]]
    attrs = {"motion_mean": train.mean(0).tolist(), "motion_std": train.std(0).tolist()}
    arrays = {"motion": ((motion.shape[1],), "float32"), "appearance": ((2,), "float32")}
    with RaggedStoreWriter(path, arrays, 16, 16, attrs=attrs) as writer:
        for i in rows:
            writer.append(
                {"motion": motion[i : i + 1], "appearance": np.zeros((1, 2), np.float32)},
                file_name=str(store.table["file_name"][i]), video=i, split=SPLITS[i],
                ef=float(store.table["ef"][i]),
            )  # fmt: skip


def write_synthetic(store: RaggedStore, root):
    """self_* = lossless copies of TEST videos with their own motion; copy_* = TRAIN copies."""
    (root / "Videos").mkdir(parents=True)
    t, rows = store.table, []
    test = [i for i, s in enumerate(SPLITS) if s == "TEST"]
    plan = [(f"self_{i}", i, i, "self", True) for i in test]
    plan += [(f"copy_{i}", i, test[0], "transfer", False) for i in (0, 1)]
    for name, frames_of, motion_of, mode, with_ed_es in plan:
        frames = store.video(frames_of)
        write_video(root / "Videos" / f"{name}.avi", frames, 25.0, codec="ffv1")
        ed_es = {"ED": t["ed"][motion_of], "ES": t["es"][motion_of]} if with_ed_es else {}
        rows.append({
            "FileName": name, "EF": t["ef"][motion_of], "FPS": 25.0, "Split": "TEST",
            "NumberOfFrames": len(frames), "Synthetic": True, "Mode": mode,
            "MotionSource": t["file_name"][motion_of],
            "AppearanceSource": t["file_name"][frames_of], **ed_es,
        })  # fmt: skip
    with (root / "FileList.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SYNTHETIC_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


LV_STEPS = 80  # the LV segmenter's steps (evaluate.lv.area: largest needs crisp masks)


def tiny_params(tmp_path, steps: int = 4, flow: str = "dis") -> EvaluateParams:
    standin = tmp_path / "standin.pt"
    if not standin.exists():
        torch.manual_seed(0)
        torch.jit.save(torch.jit.script(StandIn()), str(standin))
    extractor = {"path": str(standin), "size": 24, "call_kwargs": {"return_features": True}}
    return section("evaluate",
        clip_frames=8,
        batch_size=8,
        realism=RealismParams(
            n_frames=64, n_clips=16, max_reference_frames=128, reference_clips=32,
            inception=TorchScriptExtractorParams(**extractor),
            i3d=TorchScriptExtractorParams(**extractor, value_range="symmetric"),
        ),
        motion=MotionParams(flow=FlowProviderParams(method=flow, batch_size=4)),
        ef=EFParams(
            model=EFRegressorParams(widths=(4, 8), feature_dim=8, input_size=32),
            train=TrainParams(steps=steps, batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1),
            test_clips=2,
        ),
        lv=LVParams(
            model=LVSegmenterParams(widths=(4, 8), input_size=32),
            # trained until its masks are crisp: an LV area counts the pixels above 0.5
            train=TrainParams(steps=LV_STEPS, batch_size=4, lr=3e-3, checkpoint_every=LV_STEPS // 2,
                              log_every=1),
        ),
        privacy=PrivacyParams(frames_per_video=4, histogram_bins=10),
    )  # fmt: skip


def evaluate_on(store, tmp: Path, source_root: Path | None = None):
    """Random tiny ReID / MAFE / flow networks, features and a synthetic set from ``store``,
    then one evaluate() call (LV tracings from the EchoNet ``source_root``, if given);
    returns (paths, metrics)."""
    mafe = MAFE.from_params(TINY_MAFE).eval()
    paths = EvaluatePaths(
        videos=tmp / "videos.zarr", synthetic=tmp / "synthetic", features=tmp / "features.zarr",
        reid=tmp / "reid", mafe=tmp / "mafe", flow=tmp / "flow", ef_real=tmp / "ef",
        ef_synthetic=tmp / "ef_syn", private=tmp / "private", plots=tmp / "plots",
        lv=tmp / "lv", source_root=source_root,
    )  # fmt: skip
    mafe.save_pretrained(paths.mafe)
    ReIDEncoder(widths=(8, 16), blocks=(1, 1), embedding_dim=16).save_pretrained(paths.reid)
    PWCLite().save_pretrained(paths.flow)
    write_features(store, mafe, paths.features)
    write_synthetic(store, paths.synthetic)
    metrics = evaluate(tiny_params(tmp), paths, seed=0, device="cpu")
    write_json(tmp / "eval.json", metrics)  # valid metrics JSON, skipped entries included
    return paths, metrics


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    """Fake inputs, then one evaluate() call; returns (paths, metrics, tmp dir)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    store = write_store(tiny_dataset, tmp / "videos.zarr")
    paths, metrics = evaluate_on(store, tmp, tiny_dataset["root"])
    return paths, metrics, tmp


def read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_metrics_groups_and_keys(run):
    _, metrics, tmp = run
    assert set(metrics) == {"realism", "motion", "appearance", "ssim", "ef", "ef_lv", "privacy"}
    realism = metrics["realism"]
    for key in ("reid_fid64", "efnet_fvd16_8f", "inception_fid64", "i3d_fvd16_8f"):
        assert np.isfinite(realism[key]) and realism[key] >= 0
        assert np.isfinite(realism[f"{key}_real_baseline"])
    assert realism["n_clips_used"] == 16 and 0 < realism["n_frames_used"] <= 64
    for key in ("real_test_mae", "real_test_r2", "synthetic_mae", "synthetic_r2",
                "downstream_synthetic_r2"):  # fmt: skip
        assert key in metrics["ef"]
    assert metrics["ef"]["real_test_n"] == 3 and metrics["ef"]["synthetic_n"] == 5
    assert json.loads((tmp / "eval.json").read_text())["privacy"]["n_synthetic"] == 5


def test_a_perfect_generator_has_cosine_one_and_zero_epe(run):
    paths, metrics, _ = run
    rows = {r["file_name"]: r for r in read_csv(paths.plots / "motion.csv")}
    selves = [rows[n] for n in rows if n.startswith("self_")]
    assert len(selves) == 3
    for row in selves:
        assert float(row["cosine"]) == pytest.approx(1.0, abs=1e-4)
        # ~0: the AVI round trip (gray -> RGB -> YUV -> gray) changes a few grey levels
        assert float(row["flow_epe"]) == pytest.approx(0.0, abs=0.05)
    motion = metrics["motion"]
    assert motion["n_videos"] + motion["n_skipped"] == 5
    assert motion["cosine_mismatched"] < motion["cosine_matched"] <= 1.0 + 1e-6
    assert motion["flow_epe_mismatched"] > motion["flow_epe_matched"]


def test_privacy_flags_training_copies_and_filters_them(run):
    paths, metrics, _ = run
    rows = {r["file_name"]: r for r in read_csv(paths.plots / "privacy.csv")}
    for name in ("copy_0", "copy_1"):
        assert rows[name]["flagged"] == "True"
        assert float(rows[name]["similarity"]) == pytest.approx(1.0, abs=1e-5)
    private = {r["FileName"] for r in read_csv(paths.private / "FileList.csv")}
    flagged = {n for n, r in rows.items() if r["flagged"] == "True"}
    assert private == set(rows) - flagged and "copy_0" not in private
    assert {p.stem for p in (paths.private / "Videos").iterdir()} == private
    p = metrics["privacy"]
    assert p["flagged_fraction"] == pytest.approx(len(flagged) / 5)
    assert p["n_kept"] == 5 - p["n_flagged"]
    hist = read_csv(paths.plots / "privacy_hist.csv")
    assert len(hist) == 10 and sum(int(r["synthetic"]) for r in hist) == 5
    assert sum(int(r["real_test"]) for r in hist) == 3


def test_ef_scatter_and_models(run):
    paths, _, _ = run
    scatter = read_csv(paths.plots / "ef_scatter.csv")
    assert {r["set"] for r in scatter} == {"real_test", "synthetic", "downstream_synthetic"}
    assert all(np.isfinite(float(r["ef_pred"])) for r in scatter)
    for out in (paths.ef_real, paths.ef_synthetic):
        assert (out / "model" / "config.json").is_file()
    assert len(read_csv_tsv(paths.plots / "ef_train.tsv")) == 4


def read_csv_tsv(path):
    with path.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_second_call_continues_the_real_regressor_with_the_flow_network(run):
    paths, _, tmp = run
    evaluate(tiny_params(tmp, steps=6, flow="network"), paths, seed=0, device="cpu")
    steps = [int(r["step"]) for r in read_csv_tsv(paths.plots / "ef_train.tsv")]
    assert steps == [1, 2, 3, 4, 5, 6]  # continued from step 4, not restarted
    assert (paths.ef_real / "checkpoints" / "step-0000006").is_dir()


def test_motion_metrics_per_mode(run):
    _, metrics, _ = run
    motion = metrics["motion"]
    assert motion["self_n_videos"] == 3 and motion["transfer_n_videos"] >= 1
    assert motion["self_retrieval_top1"] == 1.0  # perfect copies find their own driver
    assert motion["self_flow_retrieval_top1"] == 1.0  # by their flow too
    assert 0 <= motion["transfer_flow_retrieval_top1"] <= 1
    assert motion["self_cosine_matched"] == pytest.approx(1.0, abs=1e-4)
    assert motion["self_flow_epe_matched"] < motion["self_flow_epe_mismatched"]
    rows = read_csv(run[0].plots / "motion.csv")
    assert {r["mode"] for r in rows} <= {"self", "transfer"}


def test_identity_free_motion_scores_beside_the_conditioning_ones(run):
    """still_*: generated vs driving ED/ES pair by MAFE with its still pairs subtracted;
    a copy of its driver matches it there too, and the scores are not the plain ones."""
    paths, metrics, _ = run
    motion = metrics["motion"]
    keys = ("cosine_matched", "cosine_mismatched", "retrieval_top1", "retrieval_top1_chance",
            "retrieval_top1_without_appearance")  # fmt: skip
    assert all(f"transfer_still_{key}" in motion for key in keys)  # one driver: no mismatch
    for mode in ("", "self_"):
        assert all(np.isfinite(motion[f"{mode}still_{key}"]) for key in keys), mode
    assert motion["self_still_retrieval_top1"] == 1.0
    assert motion["self_still_cosine_matched"] == pytest.approx(1.0, abs=1e-4)
    assert motion["still_cosine_mismatched"] != pytest.approx(motion["cosine_mismatched"])
    selves = [r for r in read_csv(paths.plots / "motion.csv") if r["mode"] == "self"]
    assert all(float(r["still_cosine"]) == pytest.approx(1.0, abs=1e-4) for r in selves)


def test_flow_retrieval_finds_the_driver_where_identity_finds_the_appearance_source():
    """Transfer rows 0 and 1 carry their appearance source's identity (the vectors point at
    columns c and a) and move like their driver (the smallest flow EPE is in their own
    column): retrieval by the vectors misses, retrieval by the flow field finds them."""
    sources, appearance = ["a", "b", "c"], ["c", "a", "c"]
    cos = np.array([[0.2, 0.1, 0.9], [0.9, 0.5, 0.1], [0.1, 0.2, 0.8]])
    epe = np.array([[0.5, 1.9, 1.2], [1.4, 0.7, 2.0], [1.8, 1.1, 0.6]])
    summary = motion_summary(cos, cos, epe, sources, appearance)
    assert summary["retrieval_top1"] == pytest.approx(1 / 3)
    assert summary["still_retrieval_top1"] == pytest.approx(1 / 3)
    assert summary["flow_retrieval_top1"] == 1.0
    assert summary["flow_retrieval_top1_without_appearance"] == 1.0
    assert summary["flow_retrieval_top1_chance"] == pytest.approx(1 / 3)
    assert summary["flow_epe_matched"] == pytest.approx(0.6)
    # a row nearer by flow to another driver is a miss
    epe[0] = [1.0, 0.4, 1.2]
    assert motion_summary(cos, cos, epe, sources, appearance)[
        "flow_retrieval_top1"
    ] == pytest.approx(2 / 3)


def test_each_driver_is_scored_once(run, monkeypatch):
    """A driver drives a self- and a transfer-mode video; it is read once, its ED/ES pair
    goes through MAFE and the flow provider once, and both videos are scored against it."""
    paths, metrics, _ = run
    data = load_data(paths)
    calls, reads = [], []
    read_video = data.store.video
    monkeypatch.setattr(data.store, "video", lambda row: reads.append(row) or read_video(row))

    def provider(first, second):
        calls.append(len(first))
        return np.zeros((len(first), 2, *first.shape[1:]), np.float32)

    motion, rows = motion_scores(
        data, paths.features, MAFE.from_pretrained(paths.mafe), provider, 8, "cpu"
    )
    drivers = {r["motion_source"] for r in rows}
    assert len(rows) > len(drivers)  # some driver drives two videos
    assert calls == [len(rows), len(drivers)]  # generated pairs, then each driver once
    driver_reads = reads[: len(drivers)]  # then the real TRAIN videos (identity-free stats)
    assert len(set(driver_reads)) == len(drivers)
    assert not set(driver_reads) & set(reads[len(drivers) :])
    assert motion["n_videos"] == len(rows)
    assert motion["self_still_retrieval_top1"] == metrics["motion"]["self_still_retrieval_top1"]


def test_appearance_and_self_mode_ssim_of_copies(run):
    _, metrics, _ = run
    # copy_* are copies of their appearance source (TRAIN videos) driven by a TEST video
    appearance = metrics["appearance"]
    assert appearance["transfer_n"] == 2
    assert appearance["transfer_nearer_appearance"] == 1.0
    assert appearance["transfer_appearance_top1"] == 1.0
    assert appearance["transfer_appearance_top1_chance"] == pytest.approx(1 / 5)  # 3 TEST + 2
    assert appearance["transfer_similarity_appearance"] == pytest.approx(1.0, abs=1e-4)
    # self_* are copies of their drivers: SSIM ~1 (the AVI round trip moves a few levels)
    ssim = metrics["ssim"]
    assert ssim["self_n"] == 3 and ssim["self_matched"] > 0.98
    assert (
        ssim["self_mismatched"] < ssim["self_matched"]
        and ssim["self_matched_above_mismatched"] == 1
    )


def test_lv_ef_estimator_metrics_and_plots(run):
    paths, metrics, _ = run
    lv = metrics["ef_lv"]
    assert lv["n_traced_train"] == 4 and lv["n_traced_test"] == 3
    assert 0 <= lv["dice_val"] <= 1 and lv["real_test_n"] == 3
    for key in ("real_test_r2", "real_test_mae", "real_test_train_mean_mae", "self_r2", "self_mae",
                "self_mismatched_mae", "self_train_mean_mae", "calibration_b"):  # fmt: skip
        assert key in lv, key
    for key in ("real_test", "self"):  # bootstrap intervals of the estimates
        assert lv[f"{key}_r2_ci_low"] <= lv[f"{key}_r2_ci_high"] <= 1, key
        assert 0 <= lv[f"{key}_mae_ci_low"] <= lv[f"{key}_mae_ci_high"], key
    # both transfer videos share one driver: no mismatched pair
    assert lv["self_n"] == 3 and lv["transfer_n"] == 2 and np.isnan(lv["transfer_mismatched_mae"])
    # self_* are copies of their drivers (through an FFV1 file and the synthetic reader: not
    # bit-exact): the estimator sees nearly the same frames twice, so its own error cancels
    assert lv["self_vs_estimated_driver_n"] == 3 and lv["self_vs_estimated_driver_mae"] < 0.2
    assert lv["self_vs_estimated_driver_mae"] < lv["self_mae"]
    assert lv["transfer_vs_estimated_driver_mae"] > 0  # copies of other videos than their driver
    # label-free: the copies' relative LV-area curves are their drivers' (distance 0, each
    # finds its driver); the transfer copies are other videos' curves
    assert lv["self_curve_distance_matched"] == pytest.approx(0.0, abs=1e-3)
    assert lv["self_curve_distance_mismatched"] > 10 * lv["self_curve_distance_matched"]
    assert lv["self_curve_retrieval_top1"] == 1.0
    assert lv["self_curve_retrieval_top1_chance"] == pytest.approx(1 / 3)
    assert lv["transfer_curve_distance_matched"] > 0
    scatter = read_csv(paths.plots / "ef_lv_scatter.csv")
    assert {"real_train", "real_test", "self"} <= {r["set"] for r in scatter}
    areas = read_csv(paths.plots / "lv_area.csv")
    series = {r["series"] for r in areas}
    names = RaggedStore(paths.videos).table["file_name"].astype(str)
    test = [n for n, s in zip(names, SPLITS, strict=True) if s == "TEST"]
    assert {f"{n}/driver" for n in test} | {f"{n}/self" for n in test} <= series
    assert all(float(r["area_px"]) >= 0 and float(r["time_s"]) >= 0 for r in areas)
    assert (paths.lv / "model" / "config.json").is_file()
    steps = [int(r["step"]) for r in read_csv_tsv(paths.plots / "lv_train.tsv")]
    assert steps[:4] == [1, 2, 3, 4]  # (6 steps once the resume test has run)


# ------------------------------------------------------------------------------- devices
# each inference path on the CPU to the end, and on the meta device until it needs data on
# the host: every module call had its weights and inputs on the device given
# (tests/device_check.py); each run loads or builds its own networks (meta drops weights)
ON_DEVICE = [
    pytest.param(partial(assert_runs_on, "cpu"), id="cpu"),
    pytest.param(assert_runs_on_meta, id="meta"),
]


@pytest.mark.parametrize("check", ON_DEVICE)
def test_flow_network_runs_on_the_given_device(check, tmp_path):
    PWCLite().save_pretrained(tmp_path / "flow")
    params = MotionParams(flow=FlowProviderParams(method="network", batch_size=2))
    paths = EvaluatePaths(flow=tmp_path / "flow")
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    check(lambda d: pair_flows(flow_provider(params, paths, d), frames, frames[::-1]))


def _ef(params: EvaluateParams) -> EFRegressor:
    return EFRegressor.from_params(params.ef.model)


def _lv(params: EvaluateParams) -> LVSegmenter:
    return LVSegmenter.from_params(params.lv.model)


TASK_PATHS = {
    "realism": lambda data, paths, p, d: realism_scores(
        data,
        extractors_for(p.realism, ReIDEncoder.from_pretrained(paths.reid), _ef(p), d),
        p,
        np.random.default_rng(0),
    ),
    "motion": lambda data, paths, p, d: motion_scores(
        data,
        paths.features,
        MAFE.from_pretrained(paths.mafe),
        flow_provider(p.motion, paths, d),
        p.batch_size,
        d,
    ),
    "appearance": lambda data, paths, p, d: appearance_scores(
        data, ReIDEncoder.from_pretrained(paths.reid), p, d
    ),
    "ef": lambda data, paths, p, d: ef_scores(data, _ef(p), _ef(p), p, device=d),
    "ef_lv": lambda data, paths, p, d: lv_scores(data, _lv(p), p, d),
    "lv_dice": lambda data, paths, p, d: segmentation_scores(
        _lv(p), traced_sets(data.store, paths.source_root), p.batch_size, d
    ),
    "privacy": lambda data, paths, p, d: privacy_scores(
        data, ReIDEncoder.from_pretrained(paths.reid), p.privacy, p.batch_size, d
    ),
}


@pytest.mark.parametrize("check", ON_DEVICE)
@pytest.mark.parametrize("name", list(TASK_PATHS))
def test_stage_inference_runs_on_the_given_device(run, name, check):
    """Each of the stage's inference calls, on the fixture's inputs and networks (the flow
    network for motion), with untrained EF regressors and LV segmenter."""
    paths, _, tmp = run
    data, params = load_data(paths), tiny_params(tmp, flow="network")
    check(lambda d: TASK_PATHS[name](data, paths, params, d))
