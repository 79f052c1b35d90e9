"""Stages reid_train and reid_export on the tiny dataset: outputs, schema, resume, metrics."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from conftest import REPO, section
from device_check import assert_runs_on, assert_runs_on_meta
from echomotion.data import TripletDataset, evenly_spaced, to_tensor
from echomotion.params import load_params
from echomotion.reid.identities import IDENTITIES_FILE, read_identities
from echomotion.reid.model import ReIDEncoder
from echomotion.reid.params import ReIDModelParams
from echomotion.stores.pseudo_reid import REID_SCHEMA
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.reid_export.params import ReIDExportParams
from echomotion.tasks.reid_export.run import check_disjoint, export_reid, untrained_like
from echomotion.tasks.reid_train.params import ReIDTrainParams
from echomotion.tasks.reid_train.run import build_encoder, train_reid
from echomotion.training.params import TrainParams

SEED = 5
EVAL_FRAMES = 4
TINY_MODEL = ReIDModelParams(widths=(8, 16), blocks=(1, 1), stem_stride=2, embedding_dim=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def train_params(steps: int) -> ReIDTrainParams:
    train = TrainParams(steps=steps, batch_size=8, lr=1e-3, checkpoint_every=2, log_every=1)
    return section("reid_train", model=TINY_MODEL, frames_per_video=10, instances=2, train=train)


def split_names(videos_path, splits: tuple[str, ...]) -> list[str]:
    table = RaggedStore(videos_path).table
    keep = np.isin(table["split"].astype(str), splits)
    return [str(n) for n in table["file_name"][keep]]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """Two calls: 2 steps, then 4 steps continuing the first run's checkpoint."""
    out = tmp_path_factory.mktemp("reid") / "models" / "reid"
    log = out.parent.parent / "plots" / "reid_train" / "train.tsv"
    kwargs = {"out_dir": out, "seed": SEED, "log_file": log}
    first = train_reid(tiny_dataset["videos"], train_params(2), **kwargs)
    second = train_reid(tiny_dataset["videos"], train_params(4), **kwargs)
    return {"out": out, "log": log, "first": first, "second": second}


@pytest.fixture(scope="module")
def exported(tiny_dataset, trained):
    path = trained["out"].parent.parent / "data" / "pseudo" / "reid.zarr"
    params = section("reid_export", eval_frames=EVAL_FRAMES, pixel_size=8, batch_size=16)
    metrics = export_reid(tiny_dataset["videos"], trained["out"], path, params, seed=SEED)
    return {"path": path, "metrics": metrics}


# ----------------------------------------------------------------------------- reid_train


def test_train_writes_model_and_curve_then_resumes(tiny_dataset, trained):
    first, second = trained["first"].result, trained["second"].result
    assert first.resumed_from is None and first.step == 2
    assert second.resumed_from == 2 and second.step == 4
    n_train = len(split_names(tiny_dataset["videos"], ("TRAIN",)))
    model = ReIDEncoder.from_pretrained(trained["out"] / "model")
    assert model.config.num_identities == n_train and model.config.embedding_dim == 16
    lines = trained["log"].read_text().splitlines()
    header = lines[0].split("\t")
    assert header[0] == "step" and {"loss", "id_loss", "triplet_loss", "id_accuracy"} <= set(header)
    assert [int(line.split("\t")[0]) for line in lines[1:]] == [1, 2, 3, 4]
    report = trained["second"].as_dict()
    assert report["steps"] == 4 and report["n_identities"] == n_train
    assert report["n_frames"] == 10 * n_train and np.isfinite(report["final"]["loss"])


def test_identities_are_the_train_videos_in_class_order(tiny_dataset, trained):
    names = read_identities(trained["out"])
    assert names == split_names(tiny_dataset["videos"], ("TRAIN",))
    stored = json.loads((trained["out"] / IDENTITIES_FILE).read_text())["videos"]
    table = RaggedStore(tiny_dataset["videos"]).table
    assert [str(table["file_name"][v]) for v in stored] == names


def test_untrained_baseline_is_the_initial_encoder(trained):
    model = ReIDEncoder.from_pretrained(trained["out"] / "model")
    initial = build_encoder(TINY_MODEL, model.config.num_identities, SEED).state_dict()
    same = untrained_like(model, SEED).state_dict()
    other = untrained_like(model, SEED + 1).state_dict()
    assert all(torch.equal(initial[k], same[k]) for k in initial)
    key = "stem.0.weight"
    assert not torch.equal(initial[key], other[key])
    assert not torch.equal(initial[key], model.state_dict()[key])  # training moved it


# ----------------------------------------------------------------------------- reid_export


def test_export_schema_order_and_unit_norm(tiny_dataset, trained, exported):
    store = RaggedStore(exported["path"])
    triplets = TripletDataset(tiny_dataset["videos"], splits=("TRAIN", "VAL", "TEST"))
    n = len(triplets.videos)
    emb = store.array("embedding")[:]
    assert emb.shape == (n, 2, 16) and emb.dtype == np.float32
    np.testing.assert_array_equal(store.offsets, np.arange(n + 1))
    assert set(store.table) == {"file_name", "video", "split", "ed", "es"}
    np.testing.assert_array_equal(store.table["video"], triplets.videos)
    source = RaggedStore(tiny_dataset["videos"]).table
    for col in ("file_name", "split", "ed", "es"):
        np.testing.assert_array_equal(store.table[col], source[col][triplets.videos])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=2), 1.0, atol=1e-5)
    assert store.attrs["embedding_dim"] == 16 and store.attrs["schema"] == REID_SCHEMA
    # Row 0 is ED, row 1 ES: recompute both for the last video.
    model = ReIDEncoder.from_pretrained(trained["out"] / "model").eval()
    video, ed, es = (int(store.table[c][-1]) for c in ("video", "ed", "es"))
    frames = RaggedStore(tiny_dataset["videos"]).video(video)[[ed, es]]
    with torch.no_grad():
        expected = model.embed(to_tensor(frames)).numpy()
    np.testing.assert_allclose(emb[-1], expected, atol=1e-5)


def chance_by_hand(n_videos: int, per_video: int) -> tuple[float, float]:
    """Random ranking of n = V F - 1 gallery items holding m = F - 1 positives:
    rank-1 = m / n; E[AP] = (1/m) sum_i (1/i) E[rel_i sum_{j<=i} rel_j]."""
    n, m = n_videos * per_video - 1, per_video - 1
    pair = m * (m - 1) / (n * (n - 1))  # P(rel_i and rel_j), i != j
    ap = sum((m / n + (i - 1) * pair) / i for i in range(1, n + 1)) / m
    return m / n, ap


def test_metrics_keys_ranges_and_chance(tiny_dataset, exported):
    metrics = exported["metrics"]
    for method in ("trained", "untrained", "pixels", "chance"):
        assert set(metrics[method]) == {"rank1", "mAP"}
        assert all(0.0 <= v <= 1.0 for v in metrics[method].values()), metrics[method]
    n_heldout = len(split_names(tiny_dataset["videos"], ("VAL", "TEST")))
    assert metrics["heldout"]["n_videos"] == n_heldout == 2
    assert metrics["heldout"]["n_queries"] == metrics["heldout"]["n_frames"] == 2 * EVAL_FRAMES
    rank1, ap = chance_by_hand(n_heldout, EVAL_FRAMES)
    assert metrics["chance"]["rank1"] == pytest.approx(rank1) == 3 / 7
    assert metrics["chance"]["mAP"] == pytest.approx(ap)
    assert metrics["n_train_identities"] == 6 and metrics["n_exported"] == 8
    assert all(-1.0 <= v <= 1.0 for v in metrics["cosine"].values())


# ----------------------------------------------------------------------------- identities


def test_heldout_identities_are_disjoint_from_training(tiny_dataset, trained):
    train_names = read_identities(trained["out"])
    heldout = split_names(tiny_dataset["videos"], ("VAL", "TEST"))
    assert heldout and not set(train_names) & set(heldout)
    check_disjoint(train_names, heldout)
    with pytest.raises(ValueError, match="held-out videos were training identities"):
        check_disjoint(train_names, [train_names[0], *heldout])


def test_export_refuses_a_model_trained_on_heldout_videos(tiny_dataset, trained, tmp_path):
    """A model whose identities include a VAL video must not be scored on it."""
    root = tmp_path / "reid"
    shutil.copytree(trained["out"] / "model", root / "model")
    content = json.loads((trained["out"] / IDENTITIES_FILE).read_text())
    content["file_names"][0] = split_names(tiny_dataset["videos"], ("VAL",))[0]
    (root / IDENTITIES_FILE).write_text(json.dumps(content))
    params = section("reid_export", eval_frames=EVAL_FRAMES)
    with pytest.raises(ValueError, match="held-out"):
        export_reid(tiny_dataset["videos"], root, tmp_path / "reid.zarr", params, seed=SEED)
    assert not (tmp_path / "reid.zarr").exists()


# ----------------------------------------------------------------------------- params


def test_params_defaults_registered_and_validated():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params.reid_train, ReIDTrainParams)
    assert isinstance(params.reid_export, ReIDExportParams)
    assert params.reid_train.train.batch_size % params.reid_train.instances == 0
    with pytest.raises(ValidationError, match="multiple of instances"):
        section("reid_train", instances=5)
    with pytest.raises(ValidationError, match="must not hold TRAIN"):
        section("reid_export", eval_splits=("VAL", "TRAIN"))


def test_evenly_spaced():
    np.testing.assert_array_equal(evenly_spaced(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(evenly_spaced(5, None), np.arange(5))
    np.testing.assert_array_equal(evenly_spaced(3, 8), np.arange(3))
    picked = evenly_spaced(9, 8)
    assert len(set(picked.tolist())) == 8 and picked[0] == 0 and picked[-1] == 8


def test_export_runs_the_encoders_on_the_given_device(tiny_dataset, trained, exported, tmp_path):
    """Both encoders and every frame batch on the stage's device (meta: nothing left on
    the CPU)."""
    params = section("reid_export", eval_frames=EVAL_FRAMES, pixel_size=8, batch_size=16)

    def run(device):
        out = tmp_path / f"{device}.zarr"
        return export_reid(tiny_dataset["videos"], trained["out"], out, params, SEED, device)

    assert assert_runs_on("cpu", run) == exported["metrics"]
    assert_runs_on_meta(run)
