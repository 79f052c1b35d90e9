"""The device inference runs on: one choice (``shared.device``, ``--device``) for every
stage; and the process state (rank, world size) of a training stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from accelerate import PartialState

AUTO = "auto"


def resolve_device(name: str | torch.device = AUTO) -> torch.device:
    """``"auto"``: the GPU when there is one (``cuda``), else the CPU; otherwise any torch
    device (``cpu``, ``cuda``, ``cuda:1``, ``mps``). Raises ValueError naming the device when
    it is not a device or not available here."""
    if isinstance(name, str) and name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"not a torch device: {name!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (device.index is not None and device.index >= count):
            raise ValueError(f"device {name!r} is not available: {count} CUDA device(s) here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} is not available here")
    return device


def process_state() -> PartialState:
    """accelerate's state of this process: its rank, the number of processes, its device.

    On a machine without CUDA this is a member of the gloo group of a multi-process CPU run
    (``python -m echomotion.cli.launch --num_processes N``); a bare ``PartialState()`` there
    would start a lone process instead, and its rank would write as if it were rank 0. The
    state is created once per process: every caller must go through this function.
    """
    from accelerate import PartialState  # not imported by the stages that never train

    return PartialState(cpu=not torch.cuda.is_available())
