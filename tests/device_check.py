"""Checks that an inference path runs every model on the device it was given.

A CPU-only machine has one real device, so "nothing left on the CPU" is checked on
PyTorch's ``meta`` device: tensors there have shapes but no data, and an operation mixing
a meta tensor with a CPU one raises. :class:`DeviceRecorder` notes, for every module call
(a global forward pre-hook), the devices of the module's own parameters and buffers and
of its tensor inputs. :func:`assert_runs_on_meta` runs a path with ``device="meta"``: a
model or an input the path forgot to move shows up as ``cpu`` in the record before the
first module call fails. The path stops where it first needs data back on the host
(``.cpu()``, ``.item()``, numpy): an error that names the meta device is expected there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook


def _tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


class DeviceRecorder:
    """Context manager: ``calls`` counts module calls; ``seen`` maps a device type to the
    first few ``"Module.what"`` that were on it."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: dict[str, list[str]] = {}

    def _note(self, device: torch.device, where: str) -> None:
        names = self.seen.setdefault(device.type, [])
        if len(names) < 5:
            names.append(where)

    def _hook(self, module: nn.Module, args: tuple) -> None:
        self.calls += 1
        name = type(module).__name__
        for kind, tensors in (
            ("parameter", module.parameters(recurse=False)),
            ("buffer", module.buffers(recurse=False)),
            ("input", _tensors(args)),
        ):
            for t in tensors:
                self._note(t.device, f"{name} {kind}")

    def __enter__(self) -> DeviceRecorder:
        self._handle = register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    @property
    def device_types(self) -> set[str]:
        return set(self.seen)


def assert_runs_on(device: str, run: Callable[[str], Any]) -> Any:
    """``run(device)`` to the end; every module call had its weights and inputs there."""
    with DeviceRecorder() as record:
        result = run(device)
    assert record.calls > 0, "no module was called"
    assert record.device_types == {torch.device(device).type}, record.seen
    return result


def assert_runs_on_meta(run: Callable[[str], Any]) -> DeviceRecorder:
    """``run("meta")`` until it first needs data on the host; no module call before that
    had a weight or an input left on another device."""
    with DeviceRecorder() as record:
        try:
            run("meta")
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            if "meta" not in str(err).lower() and record.device_types <= {"meta"}:
                raise
    assert record.calls > 0, "no module was called on the meta device"
    assert record.device_types == {"meta"}, f"left behind on another device: {record.seen}"
    return record
