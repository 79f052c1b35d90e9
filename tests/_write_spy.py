"""Write spy of the two-rank test scripts (tests/_two_rank_*.py, started by torchrun).

On ranks other than 0, :func:`spy_on_writes` wraps the file-writing functions the
training code uses so that each call whose path argument lies under ``out`` is recorded,
and sets umask 077 so that a file written by other means would lack the group-read bit
of rank 0's (umask 022) files. Call it before importing echomotion, which binds these
names at import time.
"""

from __future__ import annotations

import builtins
import os
import pathlib
import shutil
from pathlib import Path

import safetensors.torch
import torch

WRITERS = [
    (safetensors.torch, "save_file"),
    (safetensors.torch, "save_model"),
    (torch, "save"),
    (shutil, "rmtree"),
    (pathlib.Path, "mkdir"),
    (pathlib.Path, "write_text"),
    (pathlib.Path, "rename"),
    (pathlib.Path, "unlink"),
]


def _wrap(owner: object, name: str, out: Path, writes: list[str], writes_only: bool) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else kwargs.get("mode", "r")
        if writes_only and not set(mode) & set("wax+"):
            return original(*args, **kwargs)
        for arg in args[:2]:
            if isinstance(arg, (str, Path)) and Path(arg).resolve().is_relative_to(out):
                writes.append(f"{name}({args[0]})")
                break
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def spy_on_writes(out: Path, rank: int) -> list[str]:
    """The list that receives ``"name(path)"`` per write under ``out`` (empty on rank 0)."""
    writes: list[str] = []
    if rank != 0:
        os.umask(0o077)
        _wrap(builtins, "open", out, writes, writes_only=True)
        for owner, name in WRITERS:
            _wrap(owner, name, out, writes, writes_only=False)
    return writes
