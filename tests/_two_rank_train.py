"""Two-process run of echomotion.training, started by tests/test_training.py with torchrun.

Usage: torchrun --nproc_per_node 2 tests/_two_rank_train.py OUT_DIR RECORD_DIR

Each rank writes RECORD_DIR/rank<r>.json: the dataset indices it drew, its world size,
its final weights and the file writes it attempted under OUT_DIR. Rank 1 spies on the
writing functions the loop uses, and runs under umask 077 so that any file it wrote by
other means would lack the group-read bit of rank 0's (umask 022) text files.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

OUT, RECORD = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
RANK = int(os.environ["RANK"])
WRITES: list[str] = []


def spy(owner: object, name: str) -> None:
    """Record calls of ``owner.name`` whose first path argument lies under OUT."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        for arg in args[:2]:
            if isinstance(arg, (str, Path)) and Path(arg).resolve().is_relative_to(OUT):
                WRITES.append(f"{name}({arg})")
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


if RANK != 0:  # before the training package binds these names
    os.umask(0o077)
    for owner, name in [
        (safetensors.torch, "save_file"),
        (safetensors.torch, "save_model"),
        (torch, "save"),
        (shutil, "rmtree"),
        (pathlib.Path, "mkdir"),
        (pathlib.Path, "write_text"),
        (pathlib.Path, "rename"),
        (pathlib.Path, "unlink"),
    ]:
        spy(owner, name)

from echomotion.training import TrainParams, train  # noqa: E402


class Points(torch.utils.data.Dataset):
    def __init__(self, n: int = 16):
        self.x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.x[i].sum(0, keepdim=True), "index": i}


def main() -> None:
    seen: list[list[int]] = []

    def loss_fn(model, batch):
        seen.append(batch["index"].tolist())
        return nn.functional.mse_loss(model(batch["x"]), batch["y"]), {}

    torch.manual_seed(RANK)  # different initial weights: DDP must broadcast rank 0's
    model = nn.Linear(3, 1)
    params = TrainParams(steps=4, batch_size=2, lr=0.05, checkpoint_every=2, log_every=1)
    result = train(model, Points(), loss_fn, params, out_dir=OUT, seed=0, name="two-rank")
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    record = {"seen": seen, "world_size": world, "weights": weights, "step": result.step}
    (RECORD / f"rank{RANK}.json").write_text(json.dumps(record | {"writes": WRITES}))


if __name__ == "__main__":
    main()
