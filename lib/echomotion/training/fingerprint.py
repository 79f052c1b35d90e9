"""Checkpoints tied to a stage's dependencies: a stage re-run by DVC because its code or
input data changed starts training anew instead of continuing the old model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from echomotion.device import process_state
from echomotion.training.checkpoint import discard_other_inputs

SKIPPED = ("__pycache__",)  # folders that are no dependency (see .dvcignore)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix != ".pyc" and not set(p.parts) & set(SKIPPED)
    )


def add_files(digest, path: Path, root: Path) -> None:
    """Feed every file under ``path`` (its name relative to ``root``, then the SHA-256 of
    its bytes; byte code left out) into ``digest``, in sorted order."""
    for file in _files(path):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())


def dependency_fingerprint(name: str, dvc_file: str | Path = "dvc.yaml") -> str:
    """SHA-256 over every file of stage ``name``'s ``deps`` in ``dvc_file`` (paths relative
    to its folder, and bytes): the code and data the stage runs on, as DVC sees them."""
    dvc_file = Path(dvc_file)
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    if name not in stages:
        raise KeyError(f"{dvc_file}: no stage {name!r}")
    root, digest = dvc_file.parent, hashlib.sha256()
    for dep in stages[name].get("deps", []):
        path = root / dep
        if not path.exists():
            raise FileNotFoundError(f"{dvc_file}: dependency {dep!r} of stage {name!r} is missing")
        add_files(digest, path, root)
    return digest.hexdigest()


def fresh_checkpoints(name: str, *roots: str | Path, dvc_file: str | Path = "dvc.yaml") -> None:
    """Keep the checkpoints under ``roots`` only if written with the same dependencies.

    DVC keeps the persisted checkpoints of a stage across runs, so an interrupted run can
    resume; but DVC also re-runs the stage when its code or input data change, and the
    training loop, which compares only params, would then continue (or just re-save) the
    old model. Each root is stamped with :func:`dependency_fingerprint` and deleted when
    the stamp differs. Rank 0 does it; the other ranks of a multi-process run wait.
    """
    state = process_state()
    if state.is_main_process:
        fingerprint = dependency_fingerprint(name, dvc_file)
        for root in roots:
            discard_other_inputs(Path(root), fingerprint)
    state.wait_for_everyone()
