"""Checkpoint files: atomic folders, safetensors weights, RNG states, rotation."""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

logger = logging.getLogger(__name__)

_COMPLETE = re.compile(r"^step-(\d+)$")
_BEST = re.compile(r"^best-(\d+)$")
TMP_PREFIX = ".tmp-"
STATE_FILE = "training_state.json"  # with training_state.safetensors beside it
_TENSOR, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"  # JSON tags of save_state
EMA_FILE = "ema.safetensors"
CURVES_DIR = "curves"  # copies of the TSV curves up to the checkpoint's step
WEIGHTS_FILE = "model.safetensors"
VERSION_KEY = "_diffusers_version"  # left out of saved configs (see save_pretrained)


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimizer steps."""
    return f"step-{step:07d}"


def best_name(step: int) -> str:
    """Folder name of the best weights, chosen at the eval after ``step`` optimizer steps."""
    return f"best-{step:07d}"


def prune_best(root: Path, keep: int | None) -> None:
    """Delete every complete ``best-XXXXXXX`` folder under ``root`` but that of step ``keep``
    (None: all of them)."""
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        match = _BEST.match(path.name)
        if match and path.is_dir() and int(match[1]) != keep:
            shutil.rmtree(path)


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint under ``root``, oldest first."""
    if not root.is_dir():
        return []
    matches = ((_COMPLETE.match(p.name), p) for p in root.iterdir() if p.is_dir())
    return sorted((int(m[1]), p) for m, p in matches if m)


def remove_partial(root: Path) -> None:
    """Delete folders an interrupted save left behind (never complete by construction)."""
    if root.is_dir():
        for path in root.glob(f"{TMP_PREFIX}*"):
            logger.info("removing incomplete %s", path)
            shutil.rmtree(path)


def discard_other_inputs(root: Path, fingerprint: str, stamp: str = "inputs.sha256") -> bool:
    """Delete the checkpoints folder ``root`` unless it was written for ``fingerprint``.

    The training loop ties a checkpoint to the run's params (its run key) but cannot see
    what the code and data were; a caller that can fingerprint them stamps ``root`` with
    the digest here, so that a later run on other code or data starts anew instead of
    continuing (or, when finished, just re-saving) a model of the old inputs. A folder
    without the stamp is treated as foreign. Returns True when checkpoints were deleted.
    """
    root, path = Path(root), Path(root) / stamp
    stale = root.is_dir() and (not path.is_file() or path.read_text().strip() != fingerprint)
    if stale:
        logger.warning("%s holds checkpoints of other code or data: starting anew", root)
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(fingerprint + "\n")
    return stale


def write_dir_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary sibling of ``final`` with ``write(tmp)``, then rename it to ``final``."""
    tmp = final.with_name(TMP_PREFIX + final.name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def rotate(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints."""
    for _, path in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(path)


def has_save_pretrained(model: nn.Module) -> bool:
    """A diffusers ``ModelMixin`` (or another Hugging Face style model)."""
    return callable(getattr(model, "save_pretrained", None))


def save_pretrained(obj: Any, directory: str | Path) -> None:
    """``obj.save_pretrained`` (a diffusers model or pipeline) as safetensors, with the
    library version taken out of every JSON config it writes: the folder's bytes depend on
    the weights and the configuration alone, not on which diffusers release wrote them
    (``from_pretrained`` does not need the version)."""
    obj.save_pretrained(directory, safe_serialization=True)
    for path in sorted(Path(directory).rglob("*.json")):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and config.pop(VERSION_KEY, None) is not None:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_weights(model: nn.Module, directory: Path) -> None:
    """:func:`save_pretrained` when the model has it, else ``model.safetensors``."""
    if has_save_pretrained(model):
        save_pretrained(model, directory)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        save_model(model, str(directory / WEIGHTS_FILE))


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load what :func:`save_weights` wrote (all safetensors shards) into ``model``."""
    if not has_save_pretrained(model):
        load_model(model, str(directory / WEIGHTS_FILE), strict=True, device=_device_of(model))
        return
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        state.update(load_file(shard))
    model.load_state_dict(state, strict=True)


def safetensors_device(device: torch.device | str) -> str:
    """``device`` as safetensors names it: plain ``cpu`` (it refuses ``cpu:0``, the device
    of a multi-process CPU run), ``cuda:N`` unchanged."""
    device = torch.device(device)
    return "cpu" if device.type == "cpu" else str(device)


def _device_of(model: nn.Module) -> str:
    first = next(model.parameters(), None)
    return safetensors_device(first.device) if first is not None else "cpu"


def rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch (CPU, current CUDA device) RNG states,
    as tensors and primitives only (what :func:`save_state` stores)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_rest": (np_state["state"]["pos"], np_state["has_gauss"], np_state["gauss"]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_as_tuples(state["python"]))
    pos, has_gauss, gauss = state["numpy_rest"]
    key = state["numpy_key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants tuples; be safe should a loader hand back lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors inside dicts, lists, tuples and primitives) as two files
    with deterministic bytes: ``path`` (JSON: the structure and every primitive) and
    ``path`` with suffix ``.safetensors`` (the tensors, referenced from the JSON by key).
    ``torch.save`` is not used: its zip carries a per-process random serialization id,
    so identical states gave different bytes and DVC hashes."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.write_text(json.dumps(tree, sort_keys=True, allow_nan=True) + "\n")


def load_state(path: Path) -> dict[str, Any]:
    """Load a :func:`save_state` pair on the CPU: JSON and safetensors, nothing unpickled."""
    tensors = load_file(str(path.with_suffix(".safetensors")), device="cpu")
    return _decode(json.loads(path.read_text()), tensors)


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {_TENSOR: key}
    if isinstance(value, dict):
        return {_DICT: [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a training state")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if _TENSOR in value:
        return tensors[value[_TENSOR]]
    if _TUPLE in value:
        return tuple(_decode(v, tensors) for v in value[_TUPLE])
    return {_decode(k, tensors): _decode(v, tensors) for k, v in value[_DICT]}
