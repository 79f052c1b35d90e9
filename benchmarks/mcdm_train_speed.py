"""MCDM training throughput (samples/s) through the project's training loop.

python benchmarks/mcdm_train_speed.py                      # CPU, params.yaml's mcdm_train
python benchmarks/mcdm_train_speed.py --mixed-precision no bf16   # both, and their ratio
python benchmarks/mcdm_train_speed.py --device cuda --preset paper --mixed-precision bf16

Random latents stand in for the data (the loop, the UNet and the loss are the real ones),
at the latent size the params' VAE gives their frames. Each precision is timed over
``--steps`` steps after ``--warmup`` steps, so start-up is not counted; with several, the
last line gives each one's speed relative to the first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from common import REPO, device_args, parse_device_args
from echomotion.cli.preset import load_preset
from echomotion.diffusion.losses import build_scheduler, mcdm_loss
from echomotion.diffusion.params import MCDMModelParams
from echomotion.diffusion.stand_ins import random_window
from echomotion.diffusion.unet import build_unet
from echomotion.params import load_params, validate_params
from echomotion.tasks.mcdm_train.params import MCDMTrainParams
from echomotion.training.loop import train


def preset_params(preset: str | None):
    """params.yaml, or params.yaml with a preset (lib/echomotion/presets/<name>.yaml) merged in."""
    if preset in (None, "default"):
        return load_params(REPO / "params.yaml")
    _, merged = load_preset(preset, REPO / "params.yaml")
    return validate_params(merged, f"preset {preset}")


class RandomClips(torch.utils.data.Dataset):
    """Fixed random latent windows shaped like the real ones."""

    def __init__(self, model: MCDMModelParams, size: int, n: int = 64):
        g = torch.Generator().manual_seed(0)
        self.items = [random_window(model, size, g) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def settings(preset: str | None, mixed_precision: str) -> tuple[MCDMTrainParams, int]:
    """params.yaml's mcdm_train, or the paper preset's, at ``mixed_precision``; and the side
    of its latents (the prepared frame size over the VAE's downsampling)."""
    params = preset_params(preset)
    mcdm = params.mcdm_train
    train_params = mcdm.train.model_copy(update={"mixed_precision": mixed_precision})
    down = 2 ** (len(params.vae_train.model.block_out_channels) - 1)
    return mcdm.model_copy(update={"train": train_params}), params.prepare.size // down


def seconds_per_step(
    params: MCDMTrainParams, size: int, out: Path, warmup: int, steps: int
) -> float:
    """Mean seconds of an optimizer step, timed between loss calls after ``warmup`` steps
    (start-up, checkpoints and the final save are not counted)."""
    loss = partial(
        mcdm_loss,
        scheduler=build_scheduler(params.schedule),
        params=params.loss,
        time_ids=params.model.time_ids,
    )
    stamps: list[float] = []

    def timed_loss(model, batch):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return loss(model, batch)

    torch.manual_seed(0)
    run = params.train.model_copy(
        update={"steps": warmup + steps + 1, "checkpoint_every": warmup + steps + 1}
    )
    train(build_unet(params.model), RandomClips(params.model, size), timed_loss, run,
          out_dir=out, seed=0, name="bench")  # fmt: skip
    per_step = run.grad_accum
    return (stamps[-per_step] - stamps[warmup * per_step]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    device_args(parser)
    parser.add_argument(
        "--mixed-precision", choices=["no", "bf16", "fp16"], nargs="+", default=["no"]
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parse_device_args(parser)
    speeds = {}
    for precision in args.mixed_precision:
        params, size = settings(args.preset, precision)
        with tempfile.TemporaryDirectory() as work:
            seconds = seconds_per_step(params, size, Path(work), args.warmup, args.steps)
        p, m = params.train, params.model
        print(f"device {args.device}, preset {args.preset}: UNet {m.block_out_channels}, "
              f"{m.num_frames} frames of {size}x{size} latents, motion {m.motion_dim}, batch "
              f"{p.batch_size} x accum {p.grad_accum}, precision {precision}, threads "
              f"{torch.get_num_threads()}")  # fmt: skip
        speeds[precision] = p.batch_size * p.grad_accum / seconds
        print(f"{seconds:.3f} s/step over {args.steps} steps: {speeds[precision]:.2f} samples/s")
    if len(speeds) > 1:
        first = args.mixed_precision[0]
        print("relative to " + first + ": " + ", ".join(
            f"{k} {v / speeds[first]:.2f}x" for k, v in speeds.items()
        ))  # fmt: skip


if __name__ == "__main__":
    main()
