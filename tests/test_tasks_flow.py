"""Stages flow_train and flow_export on the tiny phantom: outputs, schemas, metrics, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, section
from device_check import assert_runs_on, assert_runs_on_meta
from echomotion.data import TripletDataset, midway
from echomotion.flow.classical import NetworkFlow
from echomotion.flow.losses import photometric_loss
from echomotion.flow.pairs import FlowPairDataset
from echomotion.flow.params import FlowLossParams, FlowProviderParams, PWCLiteParams, SegmentParams
from echomotion.flow.pwc import PWCLite
from echomotion.flow.truth import load_truth_pairs, score_provider
from echomotion.params import load_params
from echomotion.phantom.motion import flow_between
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.tasks.flow_export.run import export_flow
from echomotion.tasks.flow_train.params import FlowTrainParams
from echomotion.tasks.flow_train.run import train_flow
from echomotion.training.params import TrainParams
from echomotion.video import resample_indices

TINY_MODEL = PWCLiteParams(
    pyramid_channels=(8, 12, 16),
    max_displacement=2,
    feature_channels=8,
    estimator_channels=(16, 8),
    context_channels=(8, 8),
    context_dilations=(1, 2),
)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_train_params(steps: int, **train) -> FlowTrainParams:
    loop = {"batch_size": 2, "lr": 2e-3, "checkpoint_every": 2, "log_every": 1} | train
    return section(
        "flow_train",
        model=TINY_MODEL,
        loss=FlowLossParams(census_patch=5, pyramid_weights=(1.0, 1.0)),
        segments=SegmentParams(min_area=8),
        crop=32,
        eval_videos=1,
        train=TrainParams(steps=steps, **loop),
    )


def run_train(tiny_dataset, out: Path, steps: int, **train):
    return train_flow(
        tiny_dataset["videos"],
        tiny_dataset["truth"],
        tiny_train_params(steps, **train),
        out_dir=out,
        log_file=out / "plots" / "train.tsv",
        seed=0,
    )


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> dict:
    """A 2-step run into models/flow, a second call continuing it to 4 steps, and a third
    (``dvc repro -f``: the checkpoints persist) resumed at its last step."""
    out = tmp_path_factory.mktemp("flow") / "models" / "flow"
    first = run_train(tiny_dataset, out, steps=2)
    second = run_train(tiny_dataset, out, steps=4)
    return {
        "out": out,
        "first": first,
        "second": second,
        "third": run_train(tiny_dataset, out, steps=4),
    }


def test_pairs_are_seeded_and_within_the_gap(tiny_dataset):
    kwargs = {"max_gap": 3, "edes_fraction": 0.0, "crop": 24, "seed": 5}
    data = FlowPairDataset(tiny_dataset["videos"], **kwargs)
    again = FlowPairDataset(tiny_dataset["videos"], **kwargs)
    items = [data[i] for i in range(len(data))]
    for i, item in enumerate(items):
        assert item["img1"].shape == item["img2"].shape == (1, 24, 24)
        assert 1 <= abs(int(item["t1"]) - int(item["t2"])) <= 3
        assert torch.equal(item["img1"], again[i]["img1"])
    assert {int(i["t1"]) < int(i["t2"]) for i in items} == {True, False}  # both orders
    data.set_epoch(1)
    assert any(not torch.equal(a["img1"], data[i]["img1"]) for i, a in enumerate(items))


def test_edes_pairs_start_at_the_mid_frame(tiny_dataset):
    data = FlowPairDataset(tiny_dataset["videos"], edes_fraction=1.0, seed=0)
    for i in range(len(data)):
        item, row = data[i], data.table
        video = int(item["video"])
        ed, es = int(row["ed"][video]), int(row["es"][video])
        ends = {int(item["t1"]), int(item["t2"])}
        assert midway(ed, es) in ends and ends & {ed, es}


def test_flow_train_writes_model_curve_and_resumes(trained):
    out, first, second = trained["out"], trained["first"], trained["second"]
    assert (out / "model" / "config.json").is_file()
    assert list((out / "model").glob("*.safetensors"))
    assert first.result.resumed_from is None and first.result.step == 2
    assert second.result.resumed_from == 2 and second.result.step == 4
    rows = (out / "plots" / "train.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["step", "loss"] and len(rows) == 1 + 4
    evals = (out / "plots" / "eval.tsv").read_text().splitlines()
    assert evals[0].split("\t") == ["step", "epe_all", "epe_sector", "epe_lv"]
    metrics = second.as_dict()
    assert metrics["steps"] == 4 and metrics["resumed_from"] == 2
    assert metrics["val_epe_sector"] > 0 and np.isfinite(metrics["final_loss"])


def test_a_run_resumed_at_its_last_step_keeps_the_last_curve_and_eval_rows(trained):
    third = trained["third"]
    assert third.result.resumed_from == 4 and third.result.history == []  # no step taken
    again, before = third.as_dict(), trained["second"].as_dict()
    assert again.pop("resumed_from") == 4 and before.pop("resumed_from") == 2
    assert again == before  # every final_* and val_* value, exactly


def test_a_short_run_with_the_default_params_lowers_the_phantom_epe(tiny_dataset, tmp_path):
    # The stage's default network and loss, 60 steps on the tiny phantom's TRAIN pairs,
    # scored on its VAL mid->ED/ES pairs against the phantom's true flow. With PyTorch's
    # default init this run stayed on the zero-flow plateau (0.91x its start, measured).
    defaults = load_params(REPO / "params.yaml").flow_train
    loop = defaults.train.model_copy(update={"steps": 60, "warmup_steps": 10})
    params = defaults.model_copy(update={"crop": 48, "eval_videos": 2, "train": loop})
    pairs = load_truth_pairs(tiny_dataset["videos"], tiny_dataset["truth"], "VAL", 2)
    torch.manual_seed(0)
    start = score_provider(NetworkFlow(PWCLite(**params.model.model_dump())), pairs)["mean"]
    assert start == score_provider(None, pairs)["mean"]  # the untrained network: zero flow

    report = train_flow(
        tiny_dataset["videos"],
        tiny_dataset["truth"],
        params,
        out_dir=tmp_path / "flow",
        log_file=tmp_path / "flow" / "train.tsv",
        seed=0,
    )
    end = {k.removeprefix("val_epe_"): v for k, v in report.as_dict().items() if "epe" in k}
    for region in ("all", "sector"):
        assert end[region] < 0.75 * start[region], (region, start, end)
    assert end["lv"] < start["lv"], (start, end)


def test_the_training_objective_prefers_the_true_flow(tiny_dataset):
    # On the VAL pairs the stage's photometric loss is lower at the true flow than at zero
    # flow or half of it.
    params = tiny_train_params(1).loss
    pairs = load_truth_pairs(tiny_dataset["videos"], tiny_dataset["truth"], "VAL")
    img_a, img_b = (
        torch.from_numpy(f).float()[:, None] / 255 for f in (pairs.frames_a, pairs.frames_b)
    )
    truth = torch.from_numpy(pairs.flow)
    losses = [photometric_loss(img_a, img_b, s * truth, None, params) for s in (0, 0.5, 1)]
    assert losses[2] < losses[1] < losses[0], losses


def gt_magnitude(tiny_dataset, kind: int) -> float:
    """Mean true flow magnitude of the VAL mid->ED (kind 0) or mid->ES (1) pairs, written
    independently of the stage: resampling map, truth flow, bilinear resize with scaling."""
    videos, truth = RaggedStore(tiny_dataset["videos"]), RaggedStore(tiny_dataset["truth"])
    names = list(truth.table["file_name"])
    mags = []
    for v in np.flatnonzero(videos.table["split"] == "VAL"):
        row = videos.row(int(v))
        t = names.index(row["file_name"])
        disp = truth.video(t, "displacement")
        src = resample_indices(len(disp), row["source_fps"], row["fps"])
        mid, end = midway(row["ed"], row["es"]), (row["ed"], row["es"])[kind]
        flow = torch.from_numpy(flow_between(disp[src[mid]], disp[src[end]]))[None]
        size = videos.array("frames").shape[1:]
        small = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
        small = (
            small
            * torch.tensor([size[1] / flow.shape[-1], size[0] / flow.shape[-2]])[
                None, :, None, None
            ]
        )
        mags.append(small.norm(dim=1).flatten())
    return float(torch.cat(mags).mean())


def export(tiny_dataset, tmp_path, model_dir, method="dis", truth=None, device="cpu") -> dict:
    params = section("flow_export", provider=FlowProviderParams(method=method, batch_size=3))
    truth = tiny_dataset["truth"] if truth is None else truth
    out = tmp_path / "flow.zarr"
    return export_flow(tiny_dataset["videos"], model_dir, truth, params, out, device)


def test_classical_export_schema_and_metrics_without_a_model(tiny_dataset, tmp_path):
    metrics = export(tiny_dataset, tmp_path, tmp_path / "no_model")
    store = RaggedStore(tmp_path / "flow.zarr")
    expected = TripletDataset(tiny_dataset["videos"], splits=("TRAIN", "VAL", "TEST")).videos
    assert len(expected) > 3 and metrics["n_videos"] == len(expected)
    flow = store.array("flow")
    assert flow.shape == (len(expected), 4, 64, 64) and flow.dtype == np.float16
    assert list(store.lengths()) == [1] * len(expected)
    assert list(store.table["video"]) == list(expected)
    assert set(store.table) == {"file_name", "video", "split", "ed", "mid", "es"}
    videos = RaggedStore(tiny_dataset["videos"]).table
    assert list(store.table["file_name"]) == list(videos["file_name"][expected])
    ed, es = store.table["ed"], store.table["es"]
    assert list(store.table["mid"]) == [midway(a, b) for a, b in zip(ed, es, strict=True)]
    assert store.attrs["provider"]["method"] == "dis" and "flow" in store.attrs["schema"]
    assert np.abs(flow[:]).max() > 0.1  # DIS found motion

    assert metrics["ground_truth"] is True and metrics["provider"] == "dis"
    assert set(metrics["epe"]) == {"dis", "farneback", "zero"}  # no trained network
    for table in metrics["epe"].values():
        assert set(table) == {"mid_ed", "mid_es", "mean"}
        assert all(set(row) == {"all", "sector", "lv"} for row in table.values())
    zero = metrics["epe"]["zero"]
    assert zero["mid_ed"]["all"] == pytest.approx(gt_magnitude(tiny_dataset, 0), rel=1e-4)
    assert zero["mid_es"]["all"] == pytest.approx(gt_magnitude(tiny_dataset, 1), rel=1e-4)
    assert zero["mid_es"]["lv"] > zero["mid_es"]["all"]  # the LV moves most
    assert metrics["epe"]["dis"]["mean"]["sector"] < zero["mean"]["sector"]


def test_network_export_uses_the_trained_model(tiny_dataset, trained, tmp_path):
    metrics = export(tiny_dataset, tmp_path, trained["out"] / "model", method="network")
    assert metrics["provider"] == "network"
    assert set(metrics["epe"]) == {"network", "dis", "farneback", "zero"}
    store = RaggedStore(tmp_path / "flow.zarr")
    assert np.isfinite(store.array("flow")[:].astype(np.float32)).all()


def test_network_export_without_a_model_fails(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="needs a trained model"):
        export(tiny_dataset, tmp_path, tmp_path / "no_model", method="network")


def test_real_data_without_ground_truth(tiny_dataset, tmp_path):
    other = tmp_path / "truth.zarr"  # a truth store of other videos
    with RaggedStoreWriter(other, {"labels": ((4, 4), "uint8")}) as writer:
        writer.append({"labels": np.zeros((2, 4, 4), np.uint8)}, file_name="0XOTHER")
    for truth in (other, tmp_path / "missing.zarr"):
        metrics = export(tiny_dataset, tmp_path, tmp_path / "no_model", truth=truth)
        assert metrics["ground_truth"] is False and "epe" not in metrics
        assert metrics["n_videos"] > 0


def test_network_export_runs_on_the_given_device(tiny_dataset, trained, tmp_path):
    """The flow network and every frame batch on the stage's device (meta: nothing left on
    the CPU)."""
    model_dir = trained["out"] / "model"

    def run(device):
        (out := tmp_path / device).mkdir(exist_ok=True)
        return export(tiny_dataset, out, model_dir, method="network", device=device)

    assert assert_runs_on("cpu", run)["provider"] == "network"
    assert_runs_on_meta(run)
