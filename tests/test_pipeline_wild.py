"""End to end on a "wild" dataset (issue 11): the phantom's EchoNet folder re-encoded by
:func:`echomotion.wild.make_wild` with mixed frame rates (8.33 fps clips of 16 frames,
30 and 60 fps), non-square, large and side-by-side frames, colour frames with a burnt-in
ECG trace and text, long looped clips, and no tracings. `dvc repro` at the tiny preset
in a temporary copy of the repo, twice on one copy:

1. no labels at all (``prepare.low_fps: repeat``, the default policy);
2. EF for half of each split (``prepare.low_fps: native``).

Each run must complete, write every output dvc.yaml declares, count the videos right in
metrics/prepare.json, and name the skipped label-dependent metrics in metrics/eval.json.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from test_pipeline_e2e import sh, tiny_repo

from echomotion.stores.ragged import RaggedStore
from echomotion.wild import make_wild

pytestmark = pytest.mark.slow
N_VIDEOS = 12  # phantom.n_videos of the tiny preset


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A tiny-preset copy of the repo with the phantom stage run."""
    dst = tiny_repo(tmp_path_factory.mktemp("wild") / "repo")
    sh(dst, "dvc", "repro", "phantom")
    return dst


def repro_on_wild(repo: Path, labels: str, low_fps: str) -> list[dict]:
    """Write the wild folder (data/wild_<labels>), point params.yaml at it, `dvc repro`."""
    root = repo / "data" / f"wild_{labels}"
    videos = [vars(v) for v in make_wild(repo / "data/phantom/echonet", root, 0, labels)]
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["data"]["root"] = f"data/wild_{labels}"
    params["prepare"]["low_fps"] = low_fps
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "dvc", "repro")
    return videos


def declared_outputs(repo: Path) -> list[str]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.append(entry if isinstance(entry, str) else next(iter(entry)))
    return paths


def check_common(repo: Path, videos: list[dict], low_fps: str) -> tuple[dict, dict]:
    missing = [p for p in declared_outputs(repo) if not (repo / p).exists()]
    assert not missing, missing
    report = json.loads((repo / "metrics/prepare.json").read_text())
    # every row accounted for; no tracings: ED/ES from the detector (or none found)
    assert report["rows"] == report["accepted"] + report["rejected"] == N_VIDEOS
    assert report["accepted"] == N_VIDEOS, (repo / "data/prepared/rejects.csv").read_text()
    assert report["ed_es_from_tracings"] == 0
    assert report["ed_es_from_detector"] + report["without_ed_es"] == N_VIDEOS
    assert report["without_ef"] == sum(not v["labelled"] for v in videos)
    # resampling: below 25 fps repeated up (or kept), above 25 fps downsampled
    slow = sum(v["fps"] < 25 for v in videos)
    assert slow >= 2 and any(v["fps"] == 60 for v in videos)
    assert report["downsampled"] == sum(v["fps"] > 25 for v in videos)
    if low_fps == "repeat":
        assert (report["upsampled"], report["kept_source_rate"]) == (slow, 0)
        assert report["upsample_factor_max"] == pytest.approx(3.0, abs=1e-3)
    else:
        assert report["upsampled"] == 0 and report["below_target_kept_native"] == slow
    assert sum(report["fps_histogram"].values()) == N_VIDEOS
    assert report["fps_histogram"]["0-10"] == slow and report["fps_histogram"]["60+"] >= 1
    sizes = report["frame_size_histogram"]
    assert sizes.get("600x600") == 1 and sizes.get("120x160", 0) >= 1 and sum(sizes.values()) == 12
    with (repo / "plots/prepare/source_fps.csv").open() as f:
        assert sum(int(r["videos"]) for r in csv.DictReader(f)) == N_VIDEOS
    # the store: every video at the size of the preset, slow clips at the policy's rate
    store = RaggedStore(repo / "data/prepared/videos.zarr")
    assert len(store) == N_VIDEOS and store.video(0).shape[1:] == (64, 64)
    table = store.table
    fps = {str(n): float(f) for n, f in zip(table["file_name"], table["fps"], strict=True)}
    for v in videos:
        expected = 25.0 if v["fps"] >= 25 or low_fps == "repeat" else v["fps"]
        assert fps[v["file_name"]] == pytest.approx(expected, rel=1e-3), v
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    realism, motion, privacy = (evaluation[k] for k in ("realism", "motion", "privacy"))
    assert math.isfinite(realism["reid_fid64"]) and privacy["n_synthetic"] > 0
    assert motion["n_videos"] + motion["n_skipped"] == privacy["n_synthetic"]
    return report, evaluation


def test_no_labels_every_stage_completes(repo):
    videos = repro_on_wild(repo, "none", "repeat")
    _, evaluation = check_common(repo, videos, "repeat")
    ef = evaluation["ef"]
    assert ef["n_labelled_train"] == ef["n_labelled_test"] == 0
    for part in ("real_test", "synthetic", "downstream_synthetic"):
        assert set(ef[part]) == {"skipped"}, ef
    assert evaluation["realism"]["efnet_fvd8_8f"] == {"skipped": "no EF labels in TRAIN"}
    assert (repo / "models/ef_regressor/model/SKIPPED.txt").is_file()
    features = json.loads((repo / "metrics/features.json").read_text())
    assert features["ef_probe_motion"]["skipped"] == "no EF labels in TRAIN"


def test_partial_labels_every_stage_completes(repo):
    videos = repro_on_wild(repo, "partial", "native")
    _, evaluation = check_common(repo, videos, "native")
    ef = evaluation["ef"]
    labelled_test = sum(v["labelled"] and v["split"] == "TEST" for v in videos)
    assert ef["n_labelled_test"] == ef["real_test_n"] == labelled_test >= 2
    assert math.isfinite(ef["real_test_mae"])
    assert math.isfinite(evaluation["realism"]["efnet_fvd8_8f"])
    assert (repo / "models/ef_regressor/model/config.json").is_file()
