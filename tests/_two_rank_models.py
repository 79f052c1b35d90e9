"""Every trained model's real loss through the shared loop on 1 or 2 gloo processes,
started by tests/test_training.py with torchrun.

Usage: torchrun --standalone --nproc_per_node N tests/_two_rank_models.py OUT RECORD

Each rank trains each model of the pipeline (built from params.yaml: the models of
flow_train, reid_train, mafe_train, vae_train, mcdm_train and of evaluate's EF regressor
and LV segmenter) for 2 steps with its stage's loss function, on a batch drawn from a
generator seeded with the rank: ranks see different data. RECORD/rank<r>-of-<N>.json holds,
per model, one sum per parameter tensor after training. With gradients averaged, the two
ranks of a 2-process run end equal, and differ from a 1-process run on rank 0's batch.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path

import torch

from echomotion.diffusion.losses import build_scheduler, mcdm_loss, vae_loss
from echomotion.diffusion.stand_ins import random_window
from echomotion.diffusion.unet import build_unet
from echomotion.diffusion.vae import build_vae
from echomotion.evaluation.ef_regressor import EFRegressor, ef_loss
from echomotion.evaluation.lv import LVSegmenter, lv_loss
from echomotion.flow.losses import make_flow_loss
from echomotion.flow.pwc import PWCLite
from echomotion.mafe.losses import mafe_loss
from echomotion.mafe.model import MAFE
from echomotion.params import load_params
from echomotion.reid.losses import reid_loss
from echomotion.tasks.reid_train.run import build_encoder
from echomotion.training.loop import train
from echomotion.training.params import TrainParams

REPO = Path(__file__).resolve().parents[1]
OUT, RECORD = Path(sys.argv[1]), Path(sys.argv[2])
RANK = int(os.environ["RANK"])
WORLD = int(os.environ["WORLD_SIZE"])
SIZE = 32  # frame side
P = load_params(REPO / "params.yaml")


class Repeated(torch.utils.data.Dataset):
    """The same item, whatever index the rank's sampler draws."""

    def __init__(self, item: dict):
        self.item = item

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> dict:
        return self.item


def frames(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, SIZE, SIZE, generator=g)


def flow_case(g):
    model = PWCLite(**P.flow_train.model.model_dump())
    return model, make_flow_loss(P.flow_train.loss), {"img1": frames(g, 1), "img2": frames(g, 1)}


def reid_case(g):
    model = build_encoder(P.reid_train.model, num_identities=4, seed=0)
    item = {"image": frames(g, 1), "identity": torch.randint(0, 4, (), generator=g)}
    return model, partial(reid_loss, params=P.reid_train.loss), item


def mafe_case(g):
    model = MAFE.from_params(P.mafe_train.model)
    reid = torch.randn(2, P.mafe_train.model.reid_dim, generator=g)
    item = {"img0": frames(g, 1), "img1": frames(g, 1), "gt": frames(g, 1), "reid": reid}
    item["flow"] = torch.randn(4, SIZE, SIZE, generator=g)
    return model, partial(mafe_loss, params=P.mafe_train.loss), item


def vae_case(g):
    model = build_vae(P.vae_train.model)
    return model, partial(vae_loss, params=P.vae_train.loss), {"image": frames(g, 1) * 2 - 1}


def mcdm_case(g):
    m = P.mcdm_train.model
    heart_rate = float(50 + 60 * torch.rand((), generator=g))  # bpm, used by time_ids heart_rate
    item = random_window(m, SIZE // 4, g, num_frames=4, heart_rate=heart_rate)
    loss = partial(
        mcdm_loss, scheduler=build_scheduler(P.mcdm_train.schedule), params=P.mcdm_train.loss,
        time_ids=m.time_ids,
    )  # fmt: skip
    return build_unet(m), loss, item


def ef_case(g):
    model = EFRegressor.from_params(P.evaluate.ef.model)
    return model, ef_loss, {"frames": frames(g, 8, 1), "ef": torch.rand((), generator=g) * 80}


def lv_case(g):
    model = LVSegmenter.from_params(P.evaluate.lv.model)
    mask = (torch.rand(1, SIZE, SIZE, generator=g) > 0.5).to(torch.uint8)
    return model, lv_loss, {"frames": frames(g, 1), "mask": mask}


CASES = {
    "flow": flow_case, "reid": reid_case, "mafe": mafe_case, "vae": vae_case,
    "mcdm": mcdm_case, "ef": ef_case, "lv": lv_case,
}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    params = TrainParams(steps=2, batch_size=2, lr=1e-3, checkpoint_every=2, log_every=1)
    record = {}
    for name, case in CASES.items():
        torch.manual_seed(0)  # the same initial weights (DDP would broadcast rank 0's anyway)
        model, loss_fn, item = case(torch.Generator().manual_seed(100 + RANK))
        train(model, Repeated(item), loss_fn, params, out_dir=OUT / name, seed=0, name=name)
        record[name] = [float(p.detach().double().sum()) for p in model.parameters()]
    (RECORD / f"rank{RANK}-of-{WORLD}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
