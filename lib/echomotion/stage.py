"""What every stage script shares: logging set-up, params and metrics files."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from echomotion.params import Params, load_params, write_used_params


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


def finish_training(
    section: BaseModel, used_params: str | Path, metrics_path: str | Path, metrics: dict[str, Any]
) -> None:
    """A training stage's last step: rank 0 writes the params it ran with and its metrics;
    the other ranks of a multi-process run (``python -m echomotion.cli.launch``) write nothing."""
    from echomotion.device import (
        process_state,  # imports torch: not for the stages that never train
    )

    if process_state().is_main_process:
        write_used_params(section, used_params)
        write_json(metrics_path, metrics)
