"""Stages mafe_train and features on the tiny phantom, with small fake pseudo-label stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import section
from device_check import assert_runs_on, assert_runs_on_meta
from echomotion.data import TripletDataset, midway
from echomotion.evaluation.probes import ef_probe, fit_ridge, identity_retrieval
from echomotion.flow.classical import DISFlow
from echomotion.flow.ops import backward_warp
from echomotion.mafe.dataset import PseudoLabelTriplets
from echomotion.mafe.model import load_mafe
from echomotion.mafe.params import MAFEAugmentParams, MAFEModelParams
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.tasks.features.run import export_features, pair_vectors
from echomotion.tasks.mafe_train.params import MAFETrainParams
from echomotion.tasks.mafe_train.run import interpolation_scores, train_mafe
from echomotion.training.params import TrainParams

REID_DIM = 16
TINY_MODEL = MAFEModelParams(embed_dim=4, num_heads=(2, 2), window_size=4, reid_dim=REID_DIM)


pytestmark = pytest.mark.usefixtures("one_thread")


def write_fake_pseudo_stores(videos: Path, out: Path, reid_dim: int = REID_DIM) -> dict[str, Path]:
    """flow.zarr and reid.zarr with the contract's schema: DIS flow mid->ED, mid->ES and a
    random unit embedding per video (ED and ES rows slightly perturbed)."""
    triplets = TripletDataset(videos, splits=("TRAIN", "VAL", "TEST"))
    store, dis, rng = triplets.store, DISFlow("medium"), np.random.default_rng(0)
    h, w = store.array("frames").shape[1:]
    paths = {"flow": out / "flow.zarr", "reid": out / "reid.zarr"}
    flow_arrays = {"flow": ((4, h, w), "float16")}
    reid_arrays = {"embedding": ((2, reid_dim), "float32")}
    with (
        RaggedStoreWriter(paths["flow"], flow_arrays, attrs={"provider": "dis"}) as flows,
        RaggedStoreWriter(paths["reid"], reid_arrays, attrs={"embedding_dim": reid_dim}) as reid,
    ):
        for video in triplets.videos:
            row = store.row(int(video))
            ed, es = row["ed"], row["es"]
            mid = midway(ed, es)
            frames = store.video(int(video))
            flow = dis(frames[[mid, mid]], frames[[ed, es]]).reshape(1, 4, h, w)
            emb = rng.normal(size=reid_dim) + 0.1 * rng.normal(size=(2, reid_dim))
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            common = {"file_name": row["file_name"], "video": int(video), "split": row["split"]}
            flows.append({"flow": flow}, **common, ed=ed, mid=mid, es=es)
            reid.append({"embedding": emb[None]}, **common, ed=ed, es=es)
    return paths


@pytest.fixture(scope="module")
def pseudo(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    return write_fake_pseudo_stores(tiny_dataset["videos"], tmp_path_factory.mktemp("pseudo"))


def tiny_train_params(steps: int) -> MAFETrainParams:
    train = TrainParams(steps=steps, batch_size=3, lr=1e-3, checkpoint_every=2, log_every=1)
    return section("mafe_train", model=TINY_MODEL, train=train, eval_batch_size=4)


@pytest.fixture(scope="module")
def trained(tiny_dataset, pseudo, tmp_path_factory) -> dict:
    """mafe_train for 2 steps, then called again for 4: the second call must resume."""
    out = tmp_path_factory.mktemp("mafe")
    paths = (tiny_dataset["videos"], pseudo["flow"], pseudo["reid"])
    kwargs = {"out_dir": out / "model", "seed": 3, "log_file": out / "plots/train.tsv"}
    first = train_mafe(*paths, tiny_train_params(2), **kwargs, truth_path=tiny_dataset["truth"])
    rows_first = (out / "plots/train.tsv").read_text().splitlines()
    second = train_mafe(*paths, tiny_train_params(4), **kwargs, truth_path=tiny_dataset["truth"])
    return {"out": out, "first": first, "second": second, "rows_first": rows_first}


def dataset(tiny_dataset, pseudo, **kwargs) -> PseudoLabelTriplets:
    return PseudoLabelTriplets(tiny_dataset["videos"], pseudo["flow"], pseudo["reid"], **kwargs)


# ----------------------------------------------------------------------------- dataset


def test_items_join_frames_and_pseudo_labels(tiny_dataset, pseudo):
    ds = dataset(tiny_dataset, pseudo, splits=("TRAIN", "VAL", "TEST"))
    flows, reid = RaggedStore(pseudo["flow"]), RaggedStore(pseudo["reid"])
    assert (
        len(ds)
        == len(flows)
        == len(TripletDataset(tiny_dataset["videos"], ("TRAIN", "VAL", "TEST")))
    )
    item = ds[len(ds) - 1]
    video, row = int(item["video"]), len(ds) - 1
    assert int(flows.table["video"][row]) == video
    np.testing.assert_allclose(item["flow"].numpy(), flows.video(row, "flow")[0].astype(np.float32))
    np.testing.assert_allclose(item["reid"].numpy(), reid.video(row, "embedding")[0])
    t0, tm, t1 = (int(item[k]) for k in ("t0", "tm", "t1"))
    frames = ds.triplets.store.video(video)
    np.testing.assert_allclose(item["gt"][0].numpy(), frames[tm] / 255.0, atol=1e-6)
    assert float(item["timestep"]) == pytest.approx((tm - t0) / (t1 - t0))


def test_labels_of_other_frames_are_rejected(tiny_dataset, pseudo, tmp_path):
    src = RaggedStore(pseudo["flow"])
    with RaggedStoreWriter(
        tmp_path / "flow.zarr", {"flow": (src.array("flow").shape[1:], "float16")}
    ) as w:
        for i in range(len(src)):
            row = src.row(i)
            w.append({"flow": src.video(i, "flow")}, **{**row, "mid": row["mid"] + 1})
    with pytest.raises(ValueError, match="labels frames"):
        PseudoLabelTriplets(tiny_dataset["videos"], tmp_path / "flow.zarr", pseudo["reid"])


def test_augmentation_is_seeded_by_epoch_and_index(tiny_dataset, pseudo):
    a = dataset(tiny_dataset, pseudo, seed=5, augment=MAFEAugmentParams())
    b = dataset(tiny_dataset, pseudo, seed=5, augment=MAFEAugmentParams())
    assert all(torch.equal(a[i]["img0"], b[i]["img0"]) for i in range(len(a)))
    before = [a[i]["img0"] for i in range(len(a))]
    a.set_epoch(1)
    assert any(not torch.equal(x, a[i]["img0"]) for i, x in enumerate(before))


def warp_error(item: dict, flow: torch.Tensor) -> float:
    """Mean error of warping both input frames onto the middle frame with ``flow``."""
    img0, img1, gt = (item[k][None] for k in ("img0", "img1", "gt"))
    flow = flow[None]
    err0 = (backward_warp(img0, flow[:, :2]) - gt).abs().mean()
    err1 = (backward_warp(img1, flow[:, 2:]) - gt).abs().mean()
    return float(err0 + err1)


def test_augmented_flow_still_warps_the_augmented_frames(tiny_dataset, pseudo):
    plain = dataset(tiny_dataset, pseudo, seed=1)
    augmented = dataset(tiny_dataset, pseudo, seed=1, augment=MAFEAugmentParams(time_swap=0.5))
    checked = 0
    for i in range(len(plain)):
        p, a = plain[i], augmented[i]
        assert warp_error(p, p["flow"]) < warp_error(p, torch.zeros_like(p["flow"]))
        if torch.equal(p["img0"], a["img0"]) and torch.equal(p["flow"], a["flow"]):
            continue  # identity draw
        assert warp_error(a, a["flow"]) < warp_error(a, p["flow"])
        assert warp_error(a, a["flow"]) == pytest.approx(warp_error(p, p["flow"]), rel=0.05)
        checked += 1
    assert checked >= len(plain) // 2


def test_extra_triplets_carry_dis_flow(tiny_dataset, pseudo):
    ds = dataset(tiny_dataset, pseudo, extra_triplets=2, extra_half_gap=(2, 3))
    n = ds.n_videos
    assert len(ds) == 3 * n
    item = ds[n + 1]
    t0, tm, t1 = (int(item[k]) for k in ("t0", "tm", "t1"))
    assert tm - t0 == t1 - tm in (2, 3) and float(item["timestep"]) == 0.5
    assert warp_error(item, item["flow"]) < warp_error(item, torch.zeros_like(item["flow"]))


# ----------------------------------------------------------------------------- mafe_train


def test_mafe_train_writes_model_curves_and_metrics(trained):
    out, first, second = trained["out"], trained["first"], trained["second"]
    assert (out / "model/model/config.json").is_file()
    assert load_mafe(out / "model/model").config["reid_dim"] == REID_DIM
    assert first["train"]["step"] == 2 and second["train"]["step"] == 4
    assert second["ground_truth"] is True
    val = second["val"]
    expected = {"psnr", "ssim", "psnr_nearest", "ssim_nearest", "psnr_blend", "ssim_blend"}
    expected |= {f"epe_{a}_vs_{b}" for a in ("flows", "motion") for b in ("pseudo", "gt")}
    expected |= {"epe_pseudo_vs_gt", "epe_zero_vs_gt", "reid_cosine", "n_videos"}
    assert set(val) == expected
    assert all(np.isfinite(v) for v in val.values())
    assert val["epe_pseudo_vs_gt"] < val["epe_zero_vs_gt"]  # DIS beats no motion
    eval_rows = (out / "plots/eval.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in eval_rows[1:]] == ["2", "4"]


def test_mafe_train_resumes_from_its_checkpoint(trained):
    rows = (trained["out"] / "plots/train.tsv").read_text().splitlines()
    assert rows[: len(trained["rows_first"])] == trained["rows_first"]  # steps 1-2 kept
    assert [r.split("\t")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert (trained["out"] / "model/checkpoints/step-0000004").is_dir()


def test_reid_width_must_match(tiny_dataset, pseudo, tmp_path):
    params = section("mafe_train", model=TINY_MODEL.model_copy(update={"reid_dim": 8}))
    with pytest.raises(ValueError, match="reid_dim"):
        train_mafe(
            tiny_dataset["videos"], pseudo["flow"], pseudo["reid"], params, out_dir=tmp_path, seed=0
        )


def test_interpolation_baselines():
    gt, img0 = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    batch = {"img0": img0, "img1": gt.clone(), "gt": gt, "timestep": torch.tensor([0.5, 0.75])}
    scores = interpolation_scores(gt, batch)
    assert torch.allclose(scores["psnr"], torch.tensor(100.0)) and torch.allclose(
        scores["ssim"], torch.ones(2)
    )
    assert scores["psnr_nearest"][0] < 30 and scores["psnr_nearest"][1] == 100.0  # t > 0.5: img1


# ----------------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def features(tiny_dataset, trained, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("features") / "features.zarr"
    params = section("features", batch_size=3, retrieval_shifts=(-2, 2))
    metrics = export_features(tiny_dataset["videos"], trained["out"] / "model/model", path, params)
    return {"path": path, "metrics": metrics}


def test_features_store_schema(tiny_dataset, trained, features):
    store = RaggedStore(features["path"])
    triplets = TripletDataset(tiny_dataset["videos"], ("TRAIN", "VAL", "TEST"))
    model = load_mafe(trained["out"] / "model/model")
    np.testing.assert_array_equal(store.table["video"], triplets.videos)
    motion, appearance = store.array("motion")[:], store.array("appearance")[:]
    assert motion.shape == (len(triplets.videos), model.motion_vector_dim)
    assert appearance.shape == (len(triplets.videos), model.appearance_vector_dim)
    assert store.attrs["motion_dim"] == model.motion_vector_dim
    train = store.table["split"] == "TRAIN"
    assert 0 < train.sum() < len(train)
    np.testing.assert_allclose(
        store.attrs["motion_mean"], motion[train].mean(0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        store.attrs["motion_std"], np.maximum(motion[train].std(0), 1e-6), rtol=1e-4
    )
    assert not np.allclose(store.attrs["motion_mean"], motion.mean(0))  # TRAIN only
    video = int(store.table["video"][0])
    ed, es = (int(triplets.table[k][video]) for k in ("ed", "es"))
    frames = torch.from_numpy(triplets.store.video(video)[[ed, es]]).float().div(255)[:, None]
    with torch.no_grad():
        expected = model.motion_vector(frames[:1], frames[1:])
    np.testing.assert_allclose(motion[0], expected[0].numpy(), rtol=1e-4, atol=1e-5)


def test_pair_vectors_match_the_model_methods(trained):
    model = load_mafe(trained["out"] / "model/model")
    a, b = torch.rand(2, 1, 30, 30), torch.rand(2, 1, 30, 30)
    with torch.no_grad():
        motion, appearance = pair_vectors(model, a, b)
        assert torch.allclose(motion, model.motion_vector(a, b), atol=1e-6)
        assert torch.allclose(appearance, model.appearance_vector(a, b), atol=1e-6)


def test_features_metrics_keys(features):
    m = features["metrics"]
    for name in ("motion", "appearance"):
        probe = m[f"ef_probe_{name}"]
        counts = {"n_train", "n_val", "n_test"}
        if min(probe["n_train"], probe["n_test"]) < 2:  # the tiny set: too few to fit and score
            assert set(probe) == counts | {"skipped"} and "EF" in probe["skipped"]
        else:
            assert set(probe) == counts | {"r2_test", "r2_val", "alpha"}
        retrieval = m[f"retrieval_{name}"]
        assert {"rank1", "mAP", "chance_rank1", "chance_mAP", "n_queries"} == set(retrieval)
        assert retrieval["chance_rank1"] == pytest.approx(1 / m["n_videos"])
    json.dumps(m)  # plain JSON types


# ----------------------------------------------------------------------------- probes


def splits(n: int) -> np.ndarray:
    return np.array(["TRAIN"] * (n // 2) + ["VAL"] * (n // 4) + ["TEST"] * (n - n // 2 - n // 4))


def test_ridge_recovers_a_linear_ef():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 30)) * rng.uniform(0.1, 10, size=30)
    ef = x @ rng.normal(size=30) + 55.0
    result = ef_probe(x, ef, splits(80), (1e-3, 1.0, 100.0))
    assert result["r2_test"] > 0.99 and result["alpha"] == 1e-3


def test_ridge_finds_nothing_in_noise():
    rng = np.random.default_rng(1)
    x, ef = rng.normal(size=(80, 30)), rng.uniform(20, 80, size=80)
    assert ef_probe(x, ef, splits(80), (1.0, 100.0, 1e4))["r2_test"] < 0.2


def test_ridge_dual_and_primal_forms_agree():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 8)), rng.normal(size=20)
    wide = np.concatenate([x, np.zeros((20, 30))], axis=1)  # n < d: dual form; zero columns
    q = rng.normal(size=(5, 8))
    np.testing.assert_allclose(
        fit_ridge(x, y, 2.0)(q), fit_ridge(wide, y, 2.0)(np.concatenate([q, np.zeros((5, 30))], 1))
    )


def test_retrieval_finds_identity_only_when_vectors_carry_it():
    rng = np.random.default_rng(3)
    ids = np.arange(20)
    centres = rng.normal(size=(20, 16))
    gallery_ids = np.repeat(ids, 3)
    gallery = centres[gallery_ids] + 0.05 * rng.normal(size=(60, 16))
    mean, std = np.zeros(16), np.ones(16)
    assert identity_retrieval(centres, gallery, ids, gallery_ids, mean, std)["rank1"] == 1.0
    noise = rng.normal(size=(60, 16))
    result = identity_retrieval(centres, noise, ids, gallery_ids, mean, std)
    assert result["rank1"] <= 0.3 and result["chance_rank1"] == pytest.approx(0.05)


def test_features_run_mafe_on_the_given_device(tiny_dataset, trained, features, tmp_path):
    """MAFE and every frame pair on the stage's device (meta: nothing left on the CPU)."""
    params = section("features", batch_size=3, retrieval_shifts=(-2, 2))

    def run(device):
        model_dir = trained["out"] / "model/model"
        out = tmp_path / f"{device}.zarr"
        return export_features(tiny_dataset["videos"], model_dir, out, params, device)

    assert assert_runs_on("cpu", run) == features["metrics"]
    assert_runs_on_meta(run)
