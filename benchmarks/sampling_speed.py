"""Seconds per generated video: DDPM at 128 steps vs DPM-Solver++ at 25 steps.

python benchmarks/sampling_speed.py [--pipeline models/mcdm/pipeline] [--device cuda]
    [--frames N] [--guidance G] [--preset paper]

Without ``--pipeline`` (or when it does not exist) a randomly initialised pipeline of the
params.yaml sizes is timed: the cost of a step does not depend on the weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from mcdm_train_speed import preset_params

from common import REPO, device_args, parse_device_args
from echomotion.diffusion.loading import load_pipeline, sampling_scheduler
from echomotion.diffusion.losses import build_scheduler
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline
from echomotion.diffusion.unet import build_unet
from echomotion.diffusion.vae import build_vae
from echomotion.params import load_params

RUNS = (("ddpm", 128), ("dpmsolver++", 25))


def random_pipeline(preset: str) -> MotionConditionedVideoPipeline:
    """An untrained pipeline of the params.yaml (or paper) sizes."""
    params = preset_params(preset)
    model = params.mcdm_train.model
    torch.manual_seed(0)
    pipe = MotionConditionedVideoPipeline(
        vae=build_vae(params.vae_train.model).eval(),
        unet=build_unet(model).eval(),
        scheduler=build_scheduler(params.mcdm_train.schedule),
        fps=25.0,
        time_ids=model.time_ids,
        heart_rate=75.0 if model.time_ids == "heart_rate" else None,
        contraction=model.contraction,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seconds_per_video(
    pipe, scheduler: str, steps: int, frames: int, guidance: float, size: tuple[int, int]
) -> float:
    """Wall time of one video of ``frames`` frames of ``size`` with ``scheduler``."""
    pipe.scheduler = sampling_scheduler(pipe.scheduler.config, scheduler)
    reference = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
    motion = torch.randn(1, pipe.unet.config.cross_attention_dim)
    curve = np.random.default_rng(1).random((1, frames)) if pipe.config.contraction else None
    start = time.perf_counter()
    pipe(reference=reference, motion=motion, num_frames=frames, num_inference_steps=steps,
         guidance_scale=guidance, contraction=curve,
         generator=torch.Generator().manual_seed(0))  # fmt: skip
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", type=Path, default=None)
    device_args(parser)
    parser.add_argument("--frames", type=int, default=None, help="default: sample.num_frames")
    parser.add_argument("--guidance", type=float, default=None, help="default: sample's")
    args = parse_device_args(parser)
    sample = load_params(REPO / "params.yaml").sample
    frames = args.frames or sample.num_frames
    guidance = sample.guidance_scale if args.guidance is None else args.guidance
    if args.pipeline is not None and args.pipeline.is_dir():
        pipe = load_pipeline(args.pipeline, "ddpm")
        size = tuple(pipe.config.frame_size)
    else:
        pipe, size = random_pipeline(args.preset), (112, 112)
    pipe.to(args.device)
    seconds_per_video(pipe, "dpmsolver++", 2, frames, guidance, size)  # warm-up
    times = {
        name: seconds_per_video(pipe, name, steps, frames, guidance, size) for name, steps in RUNS
    }
    print(f"{frames} frames, window {pipe.unet.config.num_frames}, guidance {guidance}, "
          f"device {args.device}, threads {torch.get_num_threads()}")  # fmt: skip
    print(" | ".join(f"{name} {steps} steps: {times[name]:8.2f} s/video" for name, steps in RUNS))
    print(f"DDPM-128 / DPM-Solver++-25: {times['ddpm'] / times['dpmsolver++']:.2f}x")


if __name__ == "__main__":
    main()
