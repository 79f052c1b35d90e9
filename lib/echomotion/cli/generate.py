"""Generate one echo video: motion from a driving video, appearance from another.

    python -m echomotion.cli.generate --motion a.avi --appearance b.avi --out out.mp4
    echomotion-generate --motion a.avi --appearance b.avi --out out.gif --steps 10

The driving video is resampled to the frame rate the pipeline was trained at, so the output
lasts as long as the driver (unless ``--frames`` is given). Its ED and ES frames come from
the label-free detector (:func:`echomotion.edes.detect_ed_es`) unless ``--ed``/``--es`` give
them in the driver's own frame numbering; MAFE turns that pair into the motion vector,
normalised as in training. A pipeline trained with EF conditioning
(``mcdm_train.model.condition_ef``) also needs the driver's ``--ef`` in percent; one trained
with the heart rate (``time_ids: heart_rate``) takes the driver's label-free heart rate
(``--heart-rate`` overrides it); one trained with the contraction
(``mcdm_train.model.contraction``) takes the driver's label-free contraction curve
(:func:`echomotion.edes.contraction_curve`) from its first frame. The appearance is one
frame of the second video. Both videos are scaled to the pipeline's frame size. The suffix
of ``--out`` picks the container: ``.avi`` (MJPEG), ``.mp4`` (H.264), ``.mkv`` (lossless
FFV1) or ``.gif``. Any unusable input stops the command, before sampling, with exit status 2
and one line on stderr naming the value and the reason.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, partial
from pathlib import Path
from typing import get_args

import av
import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging

from echomotion.diffusion.conditioning import motion_from_driving_video
from echomotion.diffusion.loading import load_pipeline
from echomotion.diffusion.params import SamplerName, guidance_refusal
from echomotion.diffusion.pipeline import (
    MotionConditionedVideoPipeline,
    default_overlap,
    window_starts,
)
from echomotion.edes import (
    Beats,
    EdEs,
    detect_ed_es,
    heart_rate_bpm,
    heart_rate_or_default,
)
from echomotion.mafe.model import MAFE
from echomotion.media import save_gif
from echomotion.video import VideoReadError, read_video, resample_indices, write_video

logger = logging.getLogger("echomotion.cli.generate")


PROG, SCRIPT = "python -m echomotion.cli.generate", "echomotion-generate"  # the two ways to run it


SUFFIXES = (".avi", ".mp4", ".mkv", ".gif")


H264_ENCODERS = ("libx264", "libopenh264")  # software encoders, in order of preference


ASPECT_TOLERANCE = 0.02  # relative height/width mismatch still scaled without complaint


EPILOG = (
    "The driver is resampled to the pipeline's frame rate: the output lasts as long as the "
    "driver. --ed and --es go together. Containers: .avi MJPEG, .mp4 H.264, .mkv lossless "
    "FFV1, .gif. Exit status 2: an unusable input, named on one line of stderr."
)


class InputError(Exception):
    """An input the command cannot use; the message names the value and the reason."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0, got 0")
    return value


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 100], got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be in [0, 100], got {text}")
    return value


def _device(text: str) -> torch.device:
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` except where there is none (the help text says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line on stderr and exit status 2 (argparse would print the long usage first)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=SCRIPT if Path(sys.argv[0]).name == SCRIPT else PROG,
        description=__doc__.split("\n")[0],
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    add = parser.add_argument
    add("--motion", required=True, type=Path, help="driving echo video (its motion is copied)")
    add("--appearance", required=True, type=Path, help="video whose frame gives the appearance")
    add("--out", required=True, type=Path, help=f"output video: {', '.join(SUFFIXES)}")
    add("--pipeline", type=Path, default=Path("models/mcdm/pipeline"), help="saved pipeline")
    add("--mafe", type=Path, default=Path("models/mafe/model"), help="saved MAFE model")
    add("--frames", type=_positive_int, help="frames to generate (default: the driver's duration)")
    add("--steps", type=_positive_int, default=25, help="denoising steps per window")
    add("--guidance", type=_non_negative_float, default=1.0, help="guidance scale (1: none)")
    add("--scheduler", choices=get_args(SamplerName), default="dpmsolver++", help="sampler")
    add(
        "--appearance-frame",
        type=int,
        help="frame of --appearance to copy (default: the "
        "first; for a pipeline trained on ED-anchored windows, the first label-free ED)",
    )
    add("--ed", type=int, help="ED frame of the driver, in its own numbering (default: detected)")
    add("--es", type=int, help="ES frame of the driver, in its own numbering (default: detected)")
    add("--ef", type=_percent, help="EF in percent (only for a pipeline trained with EF)")
    add(
        "--heart-rate",
        type=_positive_float,
        help="beats per minute to draw (only for a pipeline trained with the heart rate; "
        "default: the driver's, from its label-free ED frames)",
    )
    add("--seed", type=int, default=0, help="random seed of the sampler")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    add("--device", type=_device, default=default_device, help="torch device to sample on")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """The checks that need no model or video: raise InputError before any work."""
    if (args.ed is None) != (args.es is None):
        given = "--ed" if args.es is None else "--es"
        raise InputError(f"{given} needs its partner: give both --ed and --es, or neither")
    if args.out.suffix.lower() not in SUFFIXES:
        raise InputError(
            f"--out {args.out}: unknown suffix {args.out.suffix!r}, use {', '.join(SUFFIXES)}"
        )
    if args.out.is_dir():
        raise InputError(f"--out {args.out}: is a folder")
    if args.out.suffix.lower() == ".mp4":
        h264_encoder()
    for option, path in (("--motion", args.motion), ("--appearance", args.appearance)):
        if not path.is_file():
            raise InputError(f"{option} {path}: file not found")
    if not (args.mafe / "config.json").is_file():
        raise InputError(f"--mafe {args.mafe}: no saved MAFE model (config.json not found)")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: CUDA is not available on this machine")


def pipeline_config(path: Path) -> dict:
    """The ``model_index.json`` of a saved pipeline (its frame size, training fps, and what
    it conditions on), read once so the inputs are checked before the weights load."""
    if not (path / "model_index.json").is_file():  # else diffusers asks the Hub for it
        raise InputError(f"--pipeline {path}: not a saved pipeline (model_index.json not found)")
    try:
        config = MotionConditionedVideoPipeline.load_config(path)
    except (OSError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"--pipeline {path}: not a saved pipeline ({first})") from None
    if config.get("frame_size") is None or config.get("motion_mean") is None:
        raise InputError(
            f"--pipeline {path}: model_index.json has no frame_size or motion statistics (a "
            "pipeline saved by an older mcdm_train, with conditioning.json); run mcdm_train again"
        )
    return dict(config)


def appearance_frame(args: argparse.Namespace, config: dict, appearance) -> int:
    """``--appearance-frame``, or by default the first frame, or for a pipeline trained on
    windows that start at end-diastole (``window_anchor`` "ed") the appearance video's first
    label-free ED (the first frame when none is found, with a warning)."""
    if args.appearance_frame is not None:
        return args.appearance_frame
    if config.get("window_anchor", "any") != "ed":
        return 0
    found = detect_ed_es(appearance.frames, appearance.fps or 25.0).ed_all
    if not len(found):
        logger.warning("%s: no ED found; the reference is its first frame", args.appearance)
        return 0
    return int(found.min())


def driver_detection(video) -> Callable[[], EdEs]:
    """The driving video's label-free ED/ES detection (:func:`detect_ed_es` at its frame
    rate, 25 fps when unknown), run on the first call and kept: its ED/ES and its heart
    rate come from the one detection."""
    return cache(partial(detect_ed_es, video.frames, video.fps or 25.0))


def heart_rate(
    args: argparse.Namespace, config: dict, video, detected: Callable[[], EdEs]
) -> float | None:
    """The heart-rate id: ``--heart-rate``, or for a pipeline trained with it the driver's
    label-free heart rate from ``detected`` (:func:`driver_detection`; None, the pipeline's
    training median, when fewer than two EDs are found); ``--heart-rate`` for another
    pipeline is refused."""
    if config.get("time_ids") != "heart_rate":
        if args.heart_rate is not None:
            raise InputError(
                f"--heart-rate {args.heart_rate:g}: the pipeline {args.pipeline} was trained "
                "without the heart rate; leave it out"
            )
        return None
    if args.heart_rate is not None:
        return args.heart_rate
    rate = heart_rate_bpm(detected().ed_all, video.fps or 25.0)
    return heart_rate_or_default(rate, args.motion)


def driver_contraction(
    config: dict, video, detected: Callable[[], EdEs], n: int, fps: float
) -> np.ndarray | None:
    """For a pipeline trained with the contraction, the driver's ``(1, n)`` from its first
    frame at ``fps`` (``detected``: its :func:`driver_detection`); else None."""
    if not config.get("contraction", False):
        return None
    beats = Beats.from_detection(detected(), len(video.frames), video.fps or 25.0)
    return beats.contraction_from(0, n, fps)[None]


def check_ef(path: Path, config: dict, ef: float | None) -> None:
    """``--ef`` is given exactly when the pipeline at ``path`` (``config``: its
    :func:`pipeline_config`) was trained with EF conditioning."""
    takes_ef = bool(config.get("condition_ef"))
    if takes_ef and ef is None:
        raise InputError(
            f"--pipeline {path}: trained with EF conditioning; give the driver's --ef (percent)"
        )
    if ef is not None and not takes_ef:
        raise InputError(f"--ef {ef:g}: the pipeline {path} was trained without EF; leave it out")


@contextmanager
def quiet_diffusers():
    """No loading bars or warnings from diffusers (restored after): the command logs its own."""
    verbosity, bars = diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)
        if bars:
            diffusers_logging.enable_progress_bar()


def load_models(args: argparse.Namespace):
    """(pipeline with a progress bar, MAFE) on ``args.device``, checked to fit together."""
    try:
        with quiet_diffusers():
            pipe = load_pipeline(args.pipeline, args.scheduler)
            mafe = MAFE.from_pretrained(args.mafe).eval()
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"--pipeline {args.pipeline} / --mafe {args.mafe}: cannot load ({err})"
        ) from None
    motion_dim = pipe.motion_dim
    if mafe.motion_vector_dim != motion_dim:
        raise InputError(
            f"--mafe {args.mafe}: gives {mafe.motion_vector_dim}-d motion vectors, the "
            f"pipeline {args.pipeline} takes {motion_dim}"
        )
    refusal = guidance_refusal(args.guidance, pipe.config.cond_dropout)
    if refusal:
        raise InputError(
            f"--guidance {args.guidance}: pipeline {args.pipeline}: {refusal}: use --guidance 1"
        )
    pipe.set_progress_bar_config(disable=False, desc="denoising", leave=False)
    return pipe.to(args.device), mafe.to(args.device)


def read_frames(path: Path, size: tuple[int, int], option: str):
    """The decoded video scaled to ``size`` = (H, W), or InputError naming the file; a
    video of another aspect ratio is refused rather than distorted."""
    try:
        video = read_video(path, size=size)
    except VideoReadError as err:
        raise InputError(f"{option} {err}") from None
    (h, w), (model_h, model_w) = video.source_size, size
    if abs((h / w) / (model_h / model_w) - 1) > ASPECT_TOLERANCE:
        raise InputError(
            f"{option} {path}: frames are {h}x{w} (HxW), the pipeline takes {model_h}x{model_w}; "
            "crop or pad it to that aspect ratio"
        )
    return video


@dataclass(frozen=True)
class Driver:
    """The driving video at the sampling rate: ``frames`` (T, H, W) and ED/ES in them, and
    ``length``, the frames at ``fps`` that last as long as the video did at its own rate."""

    frames: np.ndarray
    fps: float
    ed: int
    es: int
    length: int


def driver_at(
    args: argparse.Namespace, video, pipeline_fps: float | None, detected: Callable[[], EdEs]
) -> Driver:
    """The driver resampled to ``pipeline_fps`` (its own rate if None), ED/ES mapped to it
    (``detected``: its :func:`driver_detection`, used unless ``--ed``/``--es`` are given)."""
    if pipeline_fps and not video.fps:
        raise InputError(f"--motion {args.motion}: frame rate unknown, cannot resample it")
    source_fps = video.fps or 25.0  # neither rate known: keep the frames, write 25 fps
    fps, n = pipeline_fps or source_fps, len(video.frames)
    ed, es = ed_es(args, video.frames, detected)
    kept = resample_indices(n, source_fps, fps)  # (T',) source frame of each kept frame
    ed_at, es_at = (int(np.abs(kept - i).argmin()) for i in (ed, es))
    if ed_at == es_at:
        raise InputError(
            f"--motion {args.motion}: ED {ed} and ES {es} fall on one frame at the pipeline's "
            f"{fps:g} fps; give --ed/--es further apart"
        )
    length = max(1, math.floor(n * fps / source_fps + 0.5))  # n / source_fps seconds
    return Driver(video.frames[kept], fps, ed_at, es_at, length)


def ed_es(
    args: argparse.Namespace, frames: np.ndarray, detected: Callable[[], EdEs]
) -> tuple[int, int]:
    """ED/ES of the driving video in its own frames: given, or found by the detector
    (``detected``: the video's :func:`driver_detection`)."""
    if args.ed is None:
        found = detected()
        if found.ed < 0 or found.es < 0:
            raise InputError(f"--motion {args.motion}: no cardiac cycle found; pass --ed and --es")
        return found.ed, found.es
    n = len(frames)
    for option, value in (("--ed", args.ed), ("--es", args.es)):
        if not 0 <= value < n:
            raise InputError(f"{option} {value}: not a frame of {args.motion} (0..{n - 1})")
    if args.ed == args.es:
        raise InputError(f"--ed {args.ed} / --es {args.es}: ED and ES must be different frames")
    return args.ed, args.es


def h264_encoder() -> str:
    """The first H.264 encoder this PyAV build has; InputError naming them if none."""
    for name in H264_ENCODERS:
        if name in av.codecs_available:
            try:
                av.Codec(name, "w")
            except av.FFmpegError:
                continue
            return name
    raise InputError(
        f"--out .mp4 needs an H.264 encoder ({' or '.join(H264_ENCODERS)}), which this PyAV "
        "build lacks; write .avi, .mkv or .gif instead"
    )


def write_pyav(path: Path, frames: np.ndarray, fps: float, fmt: str, codec: str, pix_fmt: str):
    """Grayscale uint8 frames (T, H, W) into a ``fmt`` container, via a temporary file."""
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    with av.open(str(tmp), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="gray")))
        container.mux(stream.encode())
    tmp.replace(path)


def write_output(path: Path, frames: np.ndarray, fps: float) -> None:
    """``frames`` (T, H, W) uint8 at ``fps``, in the container that ``path``'s suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".avi":
        write_video(path, frames, fps)
    elif suffix == ".mp4":
        write_pyav(path, frames, fps, "mp4", h264_encoder(), "yuv420p")
    elif suffix == ".mkv":
        write_pyav(path, frames, fps, "matroska", "ffv1", "gray")
    else:
        tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        save_gif(frames, tmp, fps)
        tmp.replace(path)


def generate(args: argparse.Namespace) -> None:
    """Check, read, encode the motion, sample, write ``args.out``."""
    # 1. arguments and inputs: every check before the weights load
    check_args(args)
    config = pipeline_config(args.pipeline)
    frame_size, pipeline_fps = tuple(config["frame_size"]), config.get("fps")
    check_ef(args.pipeline, config, args.ef)
    video = read_frames(args.motion, frame_size, "--motion")
    appearance = read_frames(args.appearance, frame_size, "--appearance")
    frame = appearance_frame(args, config, appearance)
    if not 0 <= frame < len(appearance.frames):
        raise InputError(
            f"--appearance-frame {frame}: not a frame of {args.appearance} "
            f"(0..{len(appearance.frames) - 1})"
        )
    detected = driver_detection(video)  # ED/ES and heart rate from one detection
    driver = driver_at(args, video, pipeline_fps, detected)
    rate = heart_rate(args, config, video, detected)
    # 2. models; raw motion vector of the driving ED/ES pair (the pipeline normalises it)
    pipe, mafe = load_models(args)
    raw = motion_from_driving_video(mafe, torch.from_numpy(driver.frames), driver.ed, driver.es)
    num_frames = args.frames or driver.length
    curve = driver_contraction(config, video, detected, num_frames, driver.fps)
    window = pipe.unet.config.num_frames
    windows = len(window_starts(num_frames, window, default_overlap(window)))
    logger.info("driver: %d frames at %g fps (%.2f s), ED %d, ES %d at %g fps", len(video.frames),
                video.fps, len(video.frames) / (video.fps or driver.fps), driver.ed, driver.es,
                driver.fps)  # fmt: skip
    logger.info("sampling %d frames (%d windows x %d steps) on %s", num_frames, windows,
                args.steps, args.device)  # fmt: skip
    # 3. sample and write
    frames = pipe(
        reference=appearance.frames[frame],
        motion=raw,  # (1, D)
        ef=args.ef,
        heart_rate=rate,
        contraction=curve,
        num_frames=num_frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        generator=torch.Generator().manual_seed(args.seed),
    ).frames[0]  # (T, H, W)
    write_output(args.out, frames, driver.fps)
    logger.info("wrote %s: %d frames at %g fps (%.2f s)", args.out, len(frames), driver.fps,
                len(frames) / driver.fps)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 (one line on stderr) on unusable input."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a bad option (2, message already printed)
        return done.code if isinstance(done.code, int) else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        generate(args)
    except InputError as err:
        print(f"{parser.prog}: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
