"""End to end: the whole DVC pipeline in a temporary copy of the repo, at the `tiny`
preset (the defaults take about 15 minutes on 2 cores: see the README's stage times).

1. `dvc repro` writes every declared output; a second `dvc status` is clean.
2. `dvc exp run -S` on a prepare param re-runs prepare but not the phantom.
3. Two experiments on an MCDM param re-run mcdm_train and what follows, nothing
   upstream; `dvc exp show`, `dvc metrics diff` and `dvc plots diff` compare them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from echomotion.echonet import read_file_list
from echomotion.stores.ragged import RaggedStore

pytestmark = pytest.mark.slow
_ANYWHERE = shutil.ignore_patterns(
    ".venv", ".git", "cache", "tmp", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
)  # fmt: skip
_OUTPUTS = {"data", "models", "plots"}  # the pipeline's outputs, at the top level only


def IGNORE(directory: str, names: list[str]) -> set[str]:
    """What the copy leaves out: outputs at the top (``.dvc/plots`` holds templates)."""
    top = Path(directory).resolve() == REPO.resolve()
    return set(_ANYWHERE(directory, names)) | (
        {n for n in names if n in _OUTPUTS} if top else set()
    )


TRAINING = {  # stage: the name its training loop logs under
    "flow_train": "flow_train", "reid_train": "reid_train", "mafe_train": "mafe_train",
    "vae_train": "vae", "mcdm_train": "mcdm",
}  # fmt: skip
# Imported by every Python process started with PYTHONPATH=<its folder>: on ranks other
# than 0 it records every file write under the working directory (tests/_write_spy.py)
# and saves the list at exit.
SPY = """
import atexit, json, os, sys
from pathlib import Path
if os.environ.get("RANK", "0") != "0":
    sys.path.insert(0, os.environ["SPY_TESTS"])
    from _write_spy import spy_on_writes
    writes = spy_on_writes(Path.cwd().resolve(), int(os.environ["RANK"]))
    record = Path(os.environ["SPY_RECORD"]) / f"{os.getpid()}.json"
    atexit.register(lambda: record.write_text(json.dumps({"argv": sys.argv, "writes": writes})))
"""
UPSTREAM_OF_MCDM = ("phantom", "prepare", "flow_train", "reid_train", "mafe_train", "vae_train")
MCDM_AND_AFTER = ("mcdm_train", "sample", "evaluate", "transfer_oracle")


def sh(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, **(env or {})}
    env["OMP_NUM_THREADS"] = "1"  # tiny models: threads only add overhead
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, (
        f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout + out.stderr


def tiny_repo(dst: Path) -> Path:
    """A copy of the repository at ``dst`` with the tiny preset's params, committed to a
    new git repo (what `dvc exp run` needs)."""
    shutil.copytree(REPO, dst, ignore=IGNORE)
    sh(dst, sys.executable, "-m", "echomotion.cli.preset", "tiny", "--write")
    sh(dst, "git", "init", "-q")
    sh(dst, "git", "config", "user.email", "ci@example.invalid")
    sh(dst, "git", "config", "user.name", "ci")
    sh(dst, "git", "add", "-A")
    sh(dst, "git", "commit", "-qm", "tiny pipeline")
    return dst


def ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z_]+)'", log))


def back_to_head(repo: Path) -> None:
    """`dvc exp run` leaves its results in the workspace: restore the committed state."""
    sh(repo, "git", "reset", "-q", "--hard")
    sh(repo, "dvc", "checkout", "--force")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dst = tiny_repo(tmp_path_factory.mktemp("e2e") / "repo")
    sh(dst, "dvc", "repro")
    sh(dst, "git", "add", "-A")
    sh(dst, "git", "commit", "-qm", "tiny results")
    return dst


def test_repro_writes_every_declared_output(repo):
    for out in (
        "data/phantom/echonet/FileList.csv", "data/phantom/truth.zarr/zarr.json",
        "data/prepared/videos.zarr/zarr.json", "data/prepared/rejects.csv",
        "data/pseudo/flow.zarr/zarr.json", "data/pseudo/reid.zarr/zarr.json",
        "data/features.zarr/zarr.json", "data/latents.zarr/zarr.json",
        "models/flow/model", "models/reid/model", "models/mafe/model", "models/vae/model",
        "models/mcdm/pipeline/model_index.json", "data/synthetic/echonet/FileList.csv",
        "plots/sample/grid.png", "plots/sample/samples.gif", "metrics/eval.json",
    ):  # fmt: skip
        assert (repo / out).exists(), out
    report = json.loads((repo / "metrics/prepare.json").read_text())
    assert report["accepted"] + report["rejected"] == report["rows"] == 12
    store = RaggedStore(repo / "data/prepared/videos.zarr")
    assert len(store) == 12 and set(store.table["split"]) == {"TRAIN", "VAL", "TEST"}
    n_files = sum(1 for p in (repo / "data/prepared/videos.zarr").rglob("*") if p.is_file())
    assert n_files < 60, f"store has {n_files} files: not sharded"
    records, rejects = read_file_list(repo / "data/synthetic/echonet")
    assert records and not rejects
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    assert {"realism", "motion", "ef", "privacy"} <= set(evaluation)
    status = sh(repo, "dvc", "status")
    assert "up to date" in status.lower(), status


def test_mcdm_experiments_rerun_only_mcdm_and_after_and_diff(repo):
    logs = {}
    for name, lr in (("lr_a", "0.001"), ("lr_b", "0.0001")):
        logs[name] = sh(repo, "dvc", "exp", "run", "-n", name, "-S", f"mcdm_train.train.lr={lr}")
        back_to_head(repo)
    for log in logs.values():
        assert ran(log) == set(MCDM_AND_AFTER), log[-2000:]
        assert not ran(log) & set(UPSTREAM_OF_MCDM)
    show = json.loads(sh(repo, "dvc", "exp", "show", "--json"))
    assert "eval.json" in json.dumps(show) and "lr_a" in json.dumps(show)
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "lr_a", "lr_b", "--json"))
    keys = {k for file, values in diff.items() if file.endswith("eval.json") for k in values}
    assert any(k.startswith("realism.") for k in keys), diff
    assert any(k.startswith("privacy.") for k in keys), diff
    plots = sh(repo, "dvc", "plots", "diff", "lr_a", "lr_b", "--json")
    assert "plots/mcdm_train/train.tsv" in plots


def test_exp_run_on_a_prepare_param_skips_the_phantom(repo):
    log = sh(repo, "dvc", "exp", "run", "-n", "fps20", "-S", "prepare.target_fps=20", "prepare")
    assert ran(log) == {"prepare"}, log[-2000:]
    shown = sh(repo, "dvc", "exp", "show", "--json")
    assert "fps20" in shown


def test_training_stages_train_on_two_ranks_through_dvc(repo, tmp_path):
    """`dvc exp run -S <stage>.launch.num_processes=2`: each training stage runs as 2 gloo
    ranks (dvc.yaml's `python -m echomotion.cli.launch ${<stage>.launch}`), the pipeline
    completes, and rank 1 writes no file."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SPY)
    (record := tmp_path / "record").mkdir()
    env = {"PYTHONPATH": str(tmp_path / "site"), "SPY_TESTS": str(REPO / "tests"),
           "SPY_RECORD": str(record)}  # fmt: skip
    # 2 more steps than the committed run: each stage resumes its checkpoint (on another
    # process count, which the loop allows) and trains on 2 ranks
    changes = ("launch.num_processes=2", "train.steps=6")
    sets = [arg for stage in TRAINING for change in changes for arg in ("-S", f"{stage}.{change}")]
    log = sh(repo, "dvc", "exp", "run", "-n", "ranks2", *sets, env=env)
    back_to_head(repo)
    assert set(TRAINING) <= ran(log), log[-2000:]
    for stage, name in TRAINING.items():
        assert f"{name}: 2 processes on cpu" in log, f"{name} did not train on 2 ranks"
        assert re.search(rf"{name} step=6 ", log), f"{stage} did not train up to step 6"
    spied = [json.loads(p.read_text()) for p in record.glob("*.json")]
    assert sum("stages/" in " ".join(s["argv"]) for s in spied) >= len(TRAINING)
    assert [s for s in spied if s["writes"]] == []


def test_pseudo_label_stages_read_native_frames_when_asked(repo):
    """`-S prepare.native_frames=true -S shared.pseudo_label_frames=native`: prepare writes
    the source-rate frames in the same store, and every pseudo-label stage up to
    `features` reads them: the flow and ReID stores index exact traced frames at 50 fps
    (the resampled store's ED/ES are at 25 fps)."""
    log = sh(
        repo, "dvc", "exp", "run", "-n", "native",
        "-S", "prepare.native_frames=true", "-S", "shared.pseudo_label_frames=native",
        "features",
    )  # fmt: skip
    try:
        assert {"prepare", "flow_train", "flow_export", "reid_train", "reid_export",
                "mafe_train", "features"} <= ran(log), log[-2000:]  # fmt: skip
        assert not ran(log) & set(MCDM_AND_AFTER)
        resampled = RaggedStore(repo / "data/prepared/videos.zarr").table
        native = RaggedStore(repo / "data/prepared/videos.zarr/native").table
        assert (native["n_frames"] > resampled["n_frames"]).all()
        for out in ("data/pseudo/flow.zarr", "data/pseudo/reid.zarr"):
            table = RaggedStore(repo / out).table
            rows = table["video"]
            assert (table["ed"] == native["ed"][rows]).all(), out
            assert (table["es"] == native["es"][rows]).all(), out
            assert (table["es"] != resampled["es"][rows]).any(), out
    finally:
        back_to_head(repo)
