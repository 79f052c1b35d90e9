"""Stage ``evaluate`` without EF labels and with EF for some videos only: every label-free
metric is computed, every label-dependent one is named with the reason it was skipped, and
every declared output exists (issue 11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_tasks_evaluate import (
    SPLITS,
    evaluate_on,
    read_csv,
)

from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.tasks.evaluate.ef import too_few_labels

pytestmark = pytest.mark.usefixtures("one_thread")
# partial: 2 of 4 TRAIN and 2 of 3 TEST videos keep their EF (the minimum is 2)
LABELLED = {"none": set(), "partial": {0, 1, 5, 6}}


def write_store(tiny_dataset, path, labelled: set[int]) -> RaggedStore:
    src = RaggedStore(tiny_dataset["videos"])
    with RaggedStoreWriter(path, {"frames": ((64, 64), "uint8")}, 256, 16) as writer:
        for i in range(len(src)):
            ef = src.row(i)["ef"] if i in labelled else math.nan
            writer.append({"frames": src.video(i)}, **(src.row(i) | {"split": SPLITS[i], "ef": ef}))
    return RaggedStore(path)


@pytest.fixture(scope="module", params=["none", "partial"])
def run(request, tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"evaluate_{request.param}")
    torch.manual_seed(0)
    store = write_store(tiny_dataset, tmp / "videos.zarr", LABELLED[request.param])
    paths, metrics = evaluate_on(store, tmp, tiny_dataset["root"])
    return request.param, paths, metrics


def test_label_free_metrics_are_always_computed(run):
    _, paths, metrics = run
    realism, motion, privacy = metrics["realism"], metrics["motion"], metrics["privacy"]
    for key in ("reid_fid64", "inception_fid64", "i3d_fvd16_8f"):
        assert np.isfinite(realism[key]) and np.isfinite(realism[f"{key}_real_baseline"])
    assert motion["n_videos"] >= 1 and np.isfinite(motion["cosine_matched"])
    assert privacy["n_synthetic"] == 5 and (paths.private / "FileList.csv").is_file()


def test_label_dependent_metrics_are_skipped_with_a_reason_or_computed(run):
    labels, paths, metrics = run
    ef, realism = metrics["ef"], metrics["realism"]
    if labels == "none":
        assert ef["n_labelled_train"] == ef["n_labelled_test"] == 0
        for part in ("real_test", "synthetic", "downstream_synthetic"):
            assert ef[part]["skipped"], part
        assert ef["real_test"] == {"skipped": "no EF labels in TRAIN"}
        assert realism["efnet_fvd16_8f"] == {"skipped": "no EF labels in TRAIN"}
        assert "efnet_fvd16_8f_real_baseline" not in realism
        assert not any(isinstance(v, float) and k.startswith("real_test") for k, v in ef.items())
        # the declared outputs of the regressors that were not trained
        for out in (paths.ef_real, paths.ef_synthetic):
            assert (out / "model" / "SKIPPED.txt").read_text().strip()
            assert (out / "checkpoints").is_dir()
        assert (paths.plots / "ef_train.tsv").read_text() == "step\tloss\n"
        assert (
            paths.plots / "ef_scatter.csv"
        ).read_text().strip() == "set,file_name,ef_true,ef_pred"
    else:  # trained and scored on the labelled videos only
        assert (ef["n_labelled_train"], ef["n_labelled_test"]) == (2, 2)
        assert ef["real_test_n"] == 2 and np.isfinite(ef["real_test_mae"])
        assert ef["synthetic_n"] == 4 and "downstream_synthetic_mae" in ef
        assert np.isfinite(realism["efnet_fvd16_8f"])
        assert (paths.ef_real / "model" / "config.json").is_file()
        scatter = read_csv(paths.plots / "ef_scatter.csv")
        assert {r["set"] for r in scatter} == {"real_test", "synthetic", "downstream_synthetic"}


def test_lv_segmenter_needs_tracings_only_and_its_ef_needs_labels(run):
    labels, paths, metrics = run
    lv = metrics["ef_lv"]
    assert lv["n_traced_train"] == 4 and 0 <= lv["dice_test"] <= 1  # tracings, not EF
    assert (paths.lv / "model" / "config.json").is_file()
    assert read_csv(paths.plots / "lv_area.csv")
    if labels == "none":
        for part in ("real_val", "real_test", "transfer", "self"):
            assert lv[part] == {"skipped": "no EF labels in TRAIN"}, part
        assert not read_csv(paths.plots / "ef_lv_scatter.csv")
    else:  # calibrated on the 2 labelled TRAIN videos, scored on the labelled rest
        assert lv["real_train_n"] == 2 and lv["real_test_n"] == 2
        assert lv["self_n"] == 2 and lv["transfer_n"] == 2
        assert "skipped" in lv["real_val"]


def test_without_tracings_the_lv_estimator_is_skipped(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    store = write_store(tiny_dataset, tmp_path / "videos.zarr", set(range(8)))
    paths, metrics = evaluate_on(store, tmp_path)  # no EchoNet root: no tracings
    assert metrics["ef_lv"] == {"skipped": "no LV tracings of TRAIN videos (VolumeTracings.csv)"}
    assert (paths.lv / "model" / "SKIPPED.txt").is_file() and (paths.lv / "checkpoints").is_dir()
    assert (paths.plots / "lv_area.csv").read_text().strip() == "series,time_s,area_px"
    assert (paths.plots / "lv_train.tsv").read_text() == "step\tloss\n"
    assert metrics["ssim"]["self_n"] == 3 and metrics["appearance"]["transfer_n"] == 2


def test_too_few_labels_reason():
    assert too_few_labels(0, "TRAIN", 2) == "no EF labels in TRAIN"
    assert "only 1 video(s) of TEST" in too_few_labels(1, "TEST", 2)
    assert too_few_labels(2, "TEST", 2) is None
