"""Checkpoints tied to a stage's dependencies (echomotion.training.fingerprint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from echomotion.training.fingerprint import dependency_fingerprint, fresh_checkpoints

DVC_YAML = """
stages:
  train:
    cmd: python train.py
    deps:
      - train.py
      - lib
      - data/input.bin
    outs:
      - models/checkpoints:
          persist: true
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "train.py").write_text("print('train')\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "loss.py").write_text("W = 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.bin").write_bytes(b"\x00\x01")
    return tmp_path


def fingerprint(project: Path) -> str:
    return dependency_fingerprint("train", project / "dvc.yaml")


def test_fingerprint_follows_code_and_data_but_not_byte_code(project):
    first = fingerprint(project)
    assert fingerprint(project) == first
    (project / "lib" / "__pycache__").mkdir()
    (project / "lib" / "__pycache__" / "loss.cpython-311.pyc").write_bytes(b"junk")
    assert fingerprint(project) == first
    (project / "lib" / "loss.py").write_text("W = 2\n")
    second = fingerprint(project)
    assert second != first
    (project / "data" / "input.bin").write_bytes(b"\x00\x02")
    assert fingerprint(project) not in (first, second)
    (project / "lib" / "loss.py").rename(project / "lib" / "other.py")  # same bytes, new name
    assert fingerprint(project) != second


def test_fingerprint_names_a_missing_stage_or_dependency(project):
    with pytest.raises(KeyError, match="no stage 'nope'"):
        dependency_fingerprint("nope", project / "dvc.yaml")
    (project / "data" / "input.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data/input\.bin"):
        fingerprint(project)


def test_checkpoints_survive_only_a_run_on_the_same_dependencies(project):
    checkpoints = project / "models" / "checkpoints"
    step = checkpoints / "step-0000002"
    step.mkdir(parents=True)  # left by a run of unknown inputs: no stamp
    fresh_checkpoints("train", checkpoints, dvc_file=project / "dvc.yaml")
    assert checkpoints.is_dir() and not step.exists()

    step.mkdir()  # an interrupted run on these inputs: the next run resumes it
    fresh_checkpoints("train", checkpoints, dvc_file=project / "dvc.yaml")
    assert step.is_dir()

    (project / "data" / "input.bin").write_bytes(b"other data")
    fresh_checkpoints("train", checkpoints, dvc_file=project / "dvc.yaml")
    assert not step.exists()
    assert (checkpoints / "inputs.sha256").read_text().strip() == fingerprint(project)
