"""Two-process run of echomotion.training, started by tests/test_training.py with torchrun.

Usage: torchrun --nproc_per_node 2 tests/_two_rank_train.py OUT_DIR RECORD_DIR

Each rank writes RECORD_DIR/rank<r>.json: the dataset indices it drew, its world size,
its final weights and the file writes it attempted under OUT_DIR (see _write_spy.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from _write_spy import spy_on_writes
from torch import nn

OUT, RECORD = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
RANK = int(os.environ["RANK"])
WRITES = spy_on_writes(OUT, RANK)  # before the training package binds the writers

from echomotion.training.loop import train  # noqa: E402
from echomotion.training.params import TrainParams  # noqa: E402


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
