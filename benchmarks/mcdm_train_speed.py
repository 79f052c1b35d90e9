"""MCDM training throughput (samples/s) through the project's training loop.

python benchmarks/mcdm_train_speed.py                      # CPU, params.yaml's mcdm_train
python benchmarks/mcdm_train_speed.py --device cuda --preset paper --mixed-precision bf16

Random latents stand in for the data (the loop, the UNet and the loss are the real ones).
A short run warms up and writes a checkpoint; the timed call resumes it for ``--steps``
more steps, so start-up is not counted.
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

    def __init__(self, model: MCDMModelParams, n: int = 64, size: int = 14):
        g = torch.Generator().manual_seed(0)
        self.latents = torch.randn(
            n, model.num_frames, model.latent_channels, size, size, generator=g
        )
        self.motion = torch.randn(n, model.motion_dim, generator=g)

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "latents": self.latents[i],  # (T, C, h, w)
            "ref_latent": self.latents[i, 0],
            "motion": self.motion[i],
            "fps": torch.tensor(25.0),
        }


def settings(args: argparse.Namespace) -> MCDMTrainParams:
    """params.yaml's mcdm_train, or the paper preset, with the benchmark's overrides."""
    params = preset_params(args.preset).mcdm_train
    train_params = params.train.model_copy(update={"mixed_precision": args.mixed_precision})
    return params.model_copy(update={"train": train_params})


def seconds_per_step(params: MCDMTrainParams, out: Path, warmup: int, steps: int) -> float:
    """Mean seconds of an optimizer step, timed between loss calls after ``warmup`` steps
    (start-up, checkpoints and the final save are not counted)."""
    loss = partial(mcdm_loss, scheduler=build_scheduler(params.schedule), params=params.loss)
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
    train(build_unet(params.model), RandomClips(params.model), timed_loss, run, out_dir=out,
          seed=0, name="bench")  # fmt: skip
    per_step = run.grad_accum
    return (stamps[-per_step] - stamps[warmup * per_step]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    device_args(parser)
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parse_device_args(parser)
    params = settings(args)
    with tempfile.TemporaryDirectory() as work:
        seconds = seconds_per_step(params, Path(work), args.warmup, args.steps)
    p, m = params.train, params.model
    threads = torch.get_num_threads()
    print(f"device {args.device}, preset {args.preset}: UNet {m.block_out_channels}, "
          f"{m.num_frames} frames, motion {m.motion_dim}, batch {p.batch_size} x accum "
          f"{p.grad_accum}, precision {p.mixed_precision}, threads {threads}")  # fmt: skip
    samples = p.batch_size * p.grad_accum
    print(f"{seconds:.3f} s/step over {args.steps} steps: {samples / seconds:.2f} samples/s")


if __name__ == "__main__":
    main()
