"""Two-process `mcdm_train`, started by tests/test_tasks_generator.py with torchrun.

Usage: torchrun --standalone --nproc_per_node 2 tests/_two_rank_mcdm.py INPUTS OUT RECORD

INPUTS holds latents.zarr, features.zarr, vae/ and params.json (an MCDMTrainParams).
Each rank writes RECORD/rank<r>.json: its world size, how many batches it drew, its
final in-memory UNet weights (one sum per tensor) and the file writes it attempted under OUT
(see _write_spy.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from _write_spy import spy_on_writes

INPUTS, OUT, RECORD = (Path(a).resolve() for a in sys.argv[1:4])
RANK = int(os.environ["RANK"])
WRITES = spy_on_writes(OUT, RANK)  # before the training code binds the writers

from echomotion.tasks.mcdm_train import run as mcdm_module  # noqa: E402
from echomotion.tasks.mcdm_train.params import MCDMTrainParams  # noqa: E402
from echomotion.tasks.mcdm_train.run import train_mcdm  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    draws, built = [], []
    loss, build = mcdm_module.mcdm_loss, mcdm_module.build_unet

    def counting_loss(model, batch, **kwargs):
        draws.append(len(batch["latents"]))
        return loss(model, batch, **kwargs)

    def keeping_build(model_params):
        built.append(build(model_params))
        return built[-1]

    mcdm_module.mcdm_loss, mcdm_module.build_unet = counting_loss, keeping_build
    params = MCDMTrainParams.model_validate_json((INPUTS / "params.json").read_text())
    metrics = train_mcdm(
        INPUTS / "latents.zarr", INPUTS / "features.zarr", INPUTS / "vae", params,
        out_dir=OUT, log_file=OUT / "train.tsv", seed=3,
    )  # fmt: skip
    digest = [float(p.detach().double().sum()) for p in built[0].parameters()]  # in memory
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    record = {"world_size": world, "draws": draws, "weights": digest, "steps": metrics["steps"]}
    (RECORD / f"rank{RANK}.json").write_text(json.dumps(record | {"writes": WRITES}))


if __name__ == "__main__":
    main()
