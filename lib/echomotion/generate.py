"""Generate one echo video: motion from a driving video, appearance from another.

    python -m echomotion.generate --motion a.avi --appearance b.avi --out out.avi \\
        [--pipeline models/mcdm/pipeline] [--mafe models/mafe/model] [--frames N] \\
        [--steps S] [--guidance G] [--scheduler dpmsolver++] [--seed 0]

The driving video's ED and ES frames come from the label-free detector
(:func:`echomotion.edes.detect_ed_es`) unless ``--ed``/``--es`` are given; MAFE turns
that pair into the motion vector, normalised as in training. The appearance is one frame
of the second video (``--appearance-frame``, default the first). Both videos are read at
the frame size the pipeline was trained on. Any unusable input stops the command with
exit code 2 and a message naming the file and the reason.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from echomotion.diffusion.conditioning import motion_from_driving_video
from echomotion.edes import detect_ed_es
from echomotion.mafe.model import MAFE
from echomotion.tasks.generator.conditioning import load_pipeline
from echomotion.tasks.generator.params import SamplerName
from echomotion.video import VideoReadError, read_video, write_video

logger = logging.getLogger("echomotion.generate")


class InputError(Exception):
    """An input the command cannot use; the message names the file and the reason."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m echomotion.generate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--motion", required=True, type=Path, help="driving echo video")
    parser.add_argument("--appearance", required=True, type=Path, help="appearance video")
    parser.add_argument("--out", required=True, type=Path, help="output .avi")
    parser.add_argument("--pipeline", type=Path, default=Path("models/mcdm/pipeline"))
    parser.add_argument("--mafe", type=Path, default=Path("models/mafe/model"))
    parser.add_argument("--frames", type=_positive, help="default: the driving video's length")
    parser.add_argument("--steps", type=_positive, default=25)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--scheduler", choices=get_args(SamplerName), default="dpmsolver++")
    parser.add_argument("--appearance-frame", type=int, default=0)
    parser.add_argument("--ed", type=int, default=None, help="ED frame of the driving video")
    parser.add_argument("--es", type=int, default=None, help="ES frame of the driving video")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_models(args: argparse.Namespace):
    """(pipeline, motion normaliser, MAFE), checked to fit together."""
    try:
        pipe, normalizer = load_pipeline(args.pipeline, args.scheduler)
    except FileNotFoundError as err:
        raise InputError(str(err)) from None
    if not (args.mafe / "config.json").is_file():
        raise InputError(f"{args.mafe}: no saved MAFE model (config.json not found)")
    mafe = MAFE.from_pretrained(args.mafe).eval()
    if mafe.motion_vector_dim != normalizer.dim:
        raise InputError(
            f"{args.mafe}: gives {mafe.motion_vector_dim}-d motion vectors, the pipeline "
            f"{args.pipeline} takes {normalizer.dim}"
        )
    return pipe, normalizer, mafe


def read_frames(path: Path, size: tuple[int, int], role: str):
    """The decoded video at the model's frame size, or InputError naming the file."""
    try:
        return read_video(path, size=size)
    except VideoReadError as err:
        raise InputError(f"{role} video: {err}") from None


def ed_es(args: argparse.Namespace, frames: np.ndarray, fps: float) -> tuple[int, int]:
    """ED/ES of the driving video: given, or found by the label-free detector."""
    if args.ed is None or args.es is None:
        found = detect_ed_es(frames, fps)
        if found.ed < 0 or found.es < 0:
            raise InputError(f"{args.motion}: no cardiac cycle found (ED/ES); pass --ed and --es")
        return found.ed, found.es
    n = len(frames)
    if not (0 <= args.ed < n and 0 <= args.es < n and args.ed != args.es):
        raise InputError(
            f"{args.motion}: --ed {args.ed} / --es {args.es} must be two of {n} frames"
        )
    return args.ed, args.es


def generate(args: argparse.Namespace) -> None:
    """Read, encode the motion, sample, write ``args.out``."""
    # 1. models and inputs
    pipe, normalizer, mafe = load_models(args)
    driving = read_frames(args.motion, normalizer.frame_size, "motion")
    appearance = read_frames(args.appearance, normalizer.frame_size, "appearance")
    if not 0 <= args.appearance_frame < len(appearance.frames):
        raise InputError(
            f"{args.appearance}: --appearance-frame {args.appearance_frame} is not one of its "
            f"{len(appearance.frames)} frames"
        )
    # 2. motion vector of the driving ED/ES pair, normalised as in training
    fps = float(pipe.config.fps or driving.fps or 25.0)
    ed, es = ed_es(args, driving.frames, driving.fps or fps)
    raw = motion_from_driving_video(mafe, torch.from_numpy(driving.frames), ed, es)  # (1, D)
    logger.info("driving ED %d, ES %d", ed, es)
    # 3. sample and write
    video = pipe(
        reference=appearance.frames[args.appearance_frame],
        motion=normalizer(raw),
        num_frames=args.frames or len(driving.frames),
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
    ).frames[0]  # (T, H, W)
    write_video(args.out, video, fps)
    logger.info("wrote %s: %d frames at %g fps", args.out, len(video), fps)


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 (with a message on stderr) on unusable input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        generate(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
