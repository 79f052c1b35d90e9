"""What every stage script shares: logging set-up, params, metrics files, and checkpoints
tied to the stage's dependencies."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml

from .config import load_params
from .params import Params

SKIPPED = ("__pycache__",)  # folders that are no dependency (see .dvcignore)


def start(name: str, params_path: str | Path = "params.yaml") -> Params:
    """Configure logging and return the validated, read-only params."""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    return load_params(params_path)


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null so `dvc metrics` can read every file."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write a metrics (or summary) JSON file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix != ".pyc" and not set(p.parts) & set(SKIPPED)
    )


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
        for file in _files(path):
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def fresh_checkpoints(name: str, *roots: str | Path, dvc_file: str | Path = "dvc.yaml") -> None:
    """Keep the checkpoints under ``roots`` only if written with the same dependencies.

    DVC keeps the persisted checkpoints of a stage across runs, so an interrupted run can
    resume; but DVC also re-runs the stage when its code or input data change, and the
    training loop, which compares only params, would then continue (or just re-save) the
    old model. Each root is stamped with :func:`dependency_fingerprint` and deleted when
    the stamp differs. Rank 0 does it; the other ranks of a multi-process run wait.
    """
    from accelerate import PartialState

    from .training.checkpoint import discard_other_inputs

    state = PartialState()
    if state.is_main_process:
        fingerprint = dependency_fingerprint(name, dvc_file)
        for root in roots:
            discard_other_inputs(Path(root), fingerprint)
    state.wait_for_everyone()
