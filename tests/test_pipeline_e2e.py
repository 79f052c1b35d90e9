"""End to end: `dvc repro` of the default pipeline in a temporary copy of the repo,
then a `dvc exp run -S` on a prepare param that must not re-run the phantom."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from echomotion.store import RaggedStore

pytestmark = pytest.mark.slow
IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "data", "models", "plots", "checkpoints", "cache", "tmp", "__pycache__",
    "*.egg-info", ".pytest_cache", ".ruff_cache",
)  # fmt: skip


def sh(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("e2e") / "repo"
    shutil.copytree(REPO, dst, ignore=IGNORE)
    sh(dst, "git", "init", "-q")
    sh(dst, "git", "config", "user.email", "ci@example.invalid")
    sh(dst, "git", "config", "user.name", "ci")
    sh(dst, "git", "add", "-A")
    sh(dst, "git", "commit", "-qm", "snapshot")
    sh(dst, "dvc", "repro")
    return dst


def test_repro_writes_every_declared_output(repo):
    for out in ("data/phantom/echonet/FileList.csv", "data/phantom/truth.zarr/zarr.json",
                "data/prepared/videos.zarr/zarr.json", "data/prepared/rejects.csv"):  # fmt: skip
        assert (repo / out).exists(), out
    report = json.loads((repo / "metrics/prepare.json").read_text())
    assert report["accepted"] + report["rejected"] == report["rows"] > 0
    assert report["rejected"] == 0
    store = RaggedStore(repo / "data/prepared/videos.zarr")
    assert len(store) == report["accepted"]
    assert set(store.table["split"]) == {"TRAIN", "VAL", "TEST"}
    assert (store.table["ed"] >= 0).all() and (store.table["es"] >= 0).all()
    n_files = sum(1 for p in (repo / "data/prepared/videos.zarr").rglob("*") if p.is_file())
    assert n_files < 60, f"store has {n_files} files: not sharded"
    assert "up to date" in sh(repo, "dvc", "status").lower() or "unchanged" in sh(
        repo, "dvc", "status"
    )


def test_exp_run_on_a_prepare_param_skips_the_phantom(repo):
    log = sh(repo, "dvc", "exp", "run", "-S", "prepare.target_fps=20")
    assert "Running stage 'prepare'" in log
    assert "Running stage 'phantom'" not in log
    report = json.loads((repo / "metrics/prepare.json").read_text())
    store = RaggedStore(repo / "data/prepared/videos.zarr")
    assert set(store.table["fps"].tolist()) == {20.0} and report["accepted"] == len(store)
