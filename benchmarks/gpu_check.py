"""GPU check: every stage at the paper's shapes for a few steps in bf16 and fp16.

benchmarks/gpu_check.sh                              # one GPU, paper preset, under 8 min
python benchmarks/gpu_check.py --device cpu --tiny   # CPU smoke test at tiny shapes

Random tensors of each stage's shapes stand in for the data; the models, losses and
samplers are the project's. A training stage runs AdamW steps autocast in the precision
(fp16 with a GradScaler, as the training loop's ``mixed_precision``) with gradient
clipping; an inference stage runs one batch of its path (latents: VAE encode, features:
MAFE vectors, sample: one denoiser call). The report is one table (seconds per step and
peak memory of every stage and precision), then MCDM training samples/s and model FLOP
utilisation (MFU) at ``--batch`` x ``--frames``, then seconds per ``--frames``-frame video
with DDPM and DPM-Solver++. ``--budget-s`` bounds the whole run: what did not fit is
listed as skipped, and an error in one stage is reported without stopping the others.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import torch
from mcdm_train_speed import preset_params
from torch import Tensor, nn
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from common import parse_device_args
from echomotion.diffusion.conditioning import condition_time_ids
from echomotion.diffusion.loading import sampling_scheduler
from echomotion.diffusion.losses import build_scheduler, mcdm_loss, vae_loss
from echomotion.diffusion.stand_ins import random_window
from echomotion.diffusion.unet import build_unet, unet_predict
from echomotion.diffusion.vae import build_vae, decode_latents, encode_images
from echomotion.evaluation.ef_regressor import EFRegressor, ef_loss
from echomotion.evaluation.lv import LVSegmenter, lv_loss
from echomotion.flow.losses import make_flow_loss
from echomotion.flow.pwc import PWCLite
from echomotion.mafe.losses import mafe_loss
from echomotion.mafe.model import MAFE
from echomotion.params import Params
from echomotion.reid.losses import reid_loss
from echomotion.tasks.features.run import pair_vectors
from echomotion.tasks.reid_train.run import build_encoder

log = logging.getLogger("gpu_check")

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TRAIN_STAGES = ("flow", "reid", "mafe", "vae", "mcdm", "ef", "lv")
INFER_STAGES = ("latents", "features", "sample")
SAMPLERS = ("ddpm", "dpmsolver++")
ECHONET_TRAIN_VIDEOS = 7465  # ReID identities at the paper's scale (the classifier width)
MAX_GRAD_NORM = 1.0
# Dense bf16/fp16 tensor-core peak, TFLOP/s, by a substring of the device name (first match).
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("B200", 2250.0),
               ("A100", 312.0), ("L40S", 362.0))  # fmt: skip
# (paper, --tiny) defaults of the options that depend on the scale.
SCALE_DEFAULTS = {"steps": (3, 1), "throughput_steps": (10, 2), "ddpm_steps": (128, 4),
                  "dpm_steps": (25, 2)}  # fmt: skip


class OutOfBudget(Exception):
    """The ``--budget-s`` deadline passed."""


@dataclass
class Deadline:
    """Wall-clock deadline of the whole check."""

    budget_s: float
    start: float = field(default_factory=time.perf_counter)

    def check(self) -> None:
        if time.perf_counter() - self.start > self.budget_s:
            raise OutOfBudget


@dataclass
class Result:
    """One row of the table: a stage (or a sampler) in a precision."""

    stage: str
    precision: str
    shape: str = ""
    seconds: float | None = None  # per step (training), per batch (inference), per video
    memory_gib: float | None = None  # peak allocated; None on the CPU
    note: str = ""
    forward_flops: float | None = None  # of one step (mcdm only)
    samples: int = 0  # samples per step (mcdm only)


@dataclass
class Workload:
    """A stage's model, a random batch of its shapes, and the call that one step makes:
    ``call(model, batch) -> (loss, logs)`` for training, ``call(model, batch)`` else."""

    model: nn.Module
    batch: dict[str, Tensor]
    call: Callable
    shape: str
    samples: int = 0


@dataclass(frozen=True)
class Check:
    """What every stage shares: device, params and the sizes of the run."""

    device: torch.device
    params: Params
    batch: int  # MCDM training batch
    frames: int  # MCDM window, and the length of sampled videos
    steps: int
    warmup: int
    throughput_steps: int
    sampler_steps: dict[str, int]

    @property
    def size(self) -> int:
        return self.params.prepare.size

    @property
    def latent_side(self) -> int:
        return self.size // 2 ** (len(self.params.vae_train.model.block_out_channels) - 1)


# ----------------------------------------------------------------------------- workloads


def frames_of(batch: int, size: int) -> Tensor:
    return torch.rand(batch, 1, size, size)  # (B, 1, H, W) in [0, 1]


def keyed(fn: Callable, keys: tuple[str, ...], model: nn.Module, batch: dict[str, Tensor]):
    """``fn(model, *batch[keys])``: an inference path as a ``call(model, batch)``."""
    return fn(model, *(batch[k] for k in keys))


def flow_workload(c: Check) -> Workload:
    p = c.params.flow_train
    b, s = p.train.batch_size, p.crop or c.size
    batch = {"img1": frames_of(b, s), "img2": frames_of(b, s)}
    model = PWCLite(**p.model.model_dump())
    return Workload(model, batch, make_flow_loss(p.loss), f"{b} pairs {s}x{s}")


def reid_workload(c: Check) -> Workload:
    p = c.params.reid_train
    b, k = p.train.batch_size, p.instances
    identity = torch.arange(b // k).repeat_interleave(k)  # P x K batch
    batch = {"image": frames_of(len(identity), c.size), "identity": identity}
    model = build_encoder(p.model, num_identities=ECHONET_TRAIN_VIDEOS, seed=0)
    shape = f"{len(identity)} frames {c.size}x{c.size}, {ECHONET_TRAIN_VIDEOS} ids"
    return Workload(model, batch, partial(reid_loss, params=p.loss), shape)


def mafe_workload(c: Check) -> Workload:
    p, b, s = c.params.mafe_train, c.params.mafe_train.train.batch_size, c.size
    batch = {
        **{key: frames_of(b, s) for key in ("img0", "img1", "gt")},
        "flow": torch.randn(b, 4, s, s),  # mid->img0, mid->img1
        "reid": torch.randn(b, 2, p.model.reid_dim),
    }
    model = MAFE.from_params(p.model)
    return Workload(model, batch, partial(mafe_loss, params=p.loss), f"{b} triplets {s}x{s}")


def vae_workload(c: Check) -> Workload:
    p = c.params.vae_train
    b, s = p.train.batch_size, p.crop_size or c.size
    batch = {"image": frames_of(b, s) * 2 - 1}  # [-1, 1]
    model = build_vae(p.model)
    return Workload(model, batch, partial(vae_loss, params=p.loss), f"{b} frames {s}x{s}")


def mcdm_workload(c: Check) -> Workload:
    p = c.params.mcdm_train
    model_params = p.model.model_copy(update={"num_frames": c.frames})
    b, t, ch, h = c.batch, c.frames, p.model.latent_channels, c.latent_side
    batch = default_collate([random_window(model_params, h, fps=16.0) for _ in range(b)])
    loss = partial(
        mcdm_loss, scheduler=build_scheduler(p.schedule), params=p.loss, time_ids=p.model.time_ids
    )
    shape = f"{b} x {t} frames x {ch}x{h}x{h}"
    return Workload(build_unet(model_params), batch, loss, shape, samples=b)


def ef_workload(c: Check) -> Workload:
    p, t = c.params.evaluate.ef, c.params.evaluate.clip_frames
    b = p.train.batch_size
    batch = {"frames": torch.rand(b, t, 1, c.size, c.size), "ef": 20 + 60 * torch.rand(b)}
    shape = f"{b} clips x {t} frames {c.size}x{c.size}"
    return Workload(EFRegressor.from_params(p.model), batch, ef_loss, shape)


def lv_workload(c: Check) -> Workload:
    p, b = c.params.evaluate.lv, c.params.evaluate.lv.train.batch_size
    batch = {"frames": frames_of(b, c.size), "mask": (frames_of(b, c.size) > 0.5).float()}
    model = LVSegmenter.from_params(p.model)
    return Workload(model, batch, lv_loss, f"{b} frames {c.size}x{c.size}")


def latents_workload(c: Check) -> Workload:
    b = c.params.latents.batch_size
    batch = {"images": frames_of(b, c.size) * 2 - 1}
    model = build_vae(c.params.vae_train.model)
    call = partial(keyed, encode_images, ("images",))
    return Workload(model, batch, call, f"{b} frames {c.size}x{c.size}")


def features_workload(c: Check) -> Workload:
    b = c.params.features.batch_size
    batch = {"img0": frames_of(b, c.size), "img1": frames_of(b, c.size)}
    model = MAFE.from_params(c.params.mafe_train.model)
    call = partial(keyed, pair_vectors, ("img0", "img1"))
    return Workload(model, batch, call, f"{b} pairs {c.size}x{c.size}")


def denoiser_inputs(c: Check) -> dict[str, Tensor]:
    """One video's denoiser inputs from a stand-in window (:func:`random_window`): noisy
    latents (1, T, C, h, w), reference, motion, ids, and each frame's contraction (1, T) for
    a model with that channel."""
    m = c.params.mcdm_train.model
    window = default_collate([random_window(m, c.latent_side, num_frames=c.frames, fps=16.0)])
    zero = torch.zeros(1)  # no noise augmentation, motion not dropped
    ids = condition_time_ids(m.time_ids, window["fps"], zero, zero, window["heart_rate"])
    inputs = {"noisy": window["latents"], "ref": window["ref_latent"],
              "motion": window["motion"], "ids": ids}  # fmt: skip
    if "contraction" in window:
        inputs["contraction"] = window["contraction"]
    return inputs


def denoise(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """One denoiser call on :func:`denoiser_inputs` and a timestep ``t``."""
    b = batch
    return unet_predict(model, b["noisy"], b["ref"], b["motion"], b["ids"], b["t"],
                        contraction=b.get("contraction"))  # fmt: skip


def sample_workload(c: Check) -> Workload:
    model = build_unet(c.params.mcdm_train.model.model_copy(update={"num_frames": c.frames}))
    m, h = c.params.mcdm_train.model, c.latent_side
    shape = f"1 x {c.frames} frames x {m.latent_channels}x{h}x{h}, one denoiser call"
    batch = {**denoiser_inputs(c), "t": torch.tensor(500)}
    return Workload(model, batch, denoise, shape)


WORKLOADS: dict[str, Callable[[Check], Workload]] = {
    "flow": flow_workload, "reid": reid_workload, "mafe": mafe_workload, "vae": vae_workload,
    "mcdm": mcdm_workload, "ef": ef_workload, "lv": lv_workload, "latents": latents_workload,
    "features": features_workload, "sample": sample_workload,
}  # fmt: skip


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    """Free what the previous job left and restart the peak-memory counter."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def timed(step: Callable[[], object], device, warmup: int, steps: int, deadline) -> float:
    """Mean seconds of ``step`` over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        deadline.check()
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        deadline.check()
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def on_device(w: Workload, device: torch.device) -> Workload:
    w.model.to(device)
    w.batch = {k: v.to(device) for k, v in w.batch.items()}
    return w


def train_step(w: Workload, optimizer, scaler, device: torch.device, dtype) -> None:
    """One optimizer step: autocast loss, scaled backward, unscale, clip, step."""
    with torch.autocast(device.type, dtype=dtype):
        loss, _ = w.call(w.model, w.batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(w.model.parameters(), MAX_GRAD_NORM)
    scaler.step(optimizer)
    scaler.update()


def forward_flops(w: Workload, device: torch.device, dtype) -> float:
    """FLOPs of one forward of the loss (attention is counted on CUDA's SDPA kernels only)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, torch.autocast(device.type, dtype=dtype):
        w.call(w.model, w.batch)
    return float(counter.get_total_flops())


def run_train(stage: str, precision: str, c: Check, deadline: Deadline) -> Result:
    """AdamW steps of ``stage`` (``throughput_steps`` for mcdm, with its forward FLOPs)."""
    torch.manual_seed(0)
    w, dtype = on_device(WORKLOADS[stage](c), c.device), DTYPES[precision]
    optimizer = torch.optim.AdamW(w.model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(c.device.type, enabled=precision == "fp16")
    steps = c.throughput_steps if stage == "mcdm" else c.steps
    step = partial(train_step, w, optimizer, scaler, c.device, dtype)
    seconds = timed(step, c.device, c.warmup, steps, deadline)
    memory = peak_gib(c.device)  # of training, before the no-grad FLOP count
    flops = forward_flops(w, c.device, dtype) if stage == "mcdm" else None
    return Result(stage, precision, w.shape, seconds, memory, forward_flops=flops,
                  samples=w.samples)  # fmt: skip


def run_infer(stage: str, precision: str, c: Check, deadline: Deadline) -> Result:
    """One inference batch of ``stage``, timed over ``steps`` calls."""
    torch.manual_seed(0)
    w, dtype = on_device(WORKLOADS[stage](c), c.device), DTYPES[precision]
    w.model.eval()

    @torch.no_grad()
    def step() -> None:
        with torch.autocast(c.device.type, dtype=dtype):
            w.call(w.model, w.batch)

    seconds = timed(step, c.device, c.warmup, c.steps, deadline)
    return Result(stage, precision, w.shape, seconds, peak_gib(c.device))


@torch.no_grad()
def sample_video(unet, vae, scheduler, steps: int, c: Check, deadline: Deadline) -> None:
    """One ``c.frames``-frame video: ``steps`` denoising steps of one window, then decoding
    (the pipeline's loop for a video that fits the window; the conditions are random)."""
    x = {k: v.to(c.device) for k, v in denoiser_inputs(c).items()}
    scheduler.set_timesteps(steps, device=c.device)
    latents = x["noisy"] * scheduler.init_noise_sigma  # (1, T, C, h, w)
    for t in scheduler.timesteps:
        deadline.check()
        model_input = scheduler.scale_model_input(latents, t)
        out = denoise(unet, {**x, "noisy": model_input, "t": t})
        latents = scheduler.step(out.float(), t, latents).prev_sample
    decode_latents(vae, latents.flatten(0, 1))  # (T, H, W) uint8


def run_sampler(name: str, precision: str, c: Check, deadline: Deadline) -> Result:
    """Seconds per video with sampler ``name`` (after a one-step warm-up video)."""
    torch.manual_seed(0)
    model = c.params.mcdm_train.model.model_copy(update={"num_frames": c.frames})
    unet = build_unet(model).to(c.device).eval()
    vae = build_vae(c.params.vae_train.model).to(c.device).eval()
    scheduler = sampling_scheduler(build_scheduler(c.params.mcdm_train.schedule).config, name)
    steps = c.sampler_steps[name]
    with torch.autocast(c.device.type, dtype=DTYPES[precision]):
        video = partial(sample_video, unet, vae, scheduler)
        video(1, c, deadline)  # warm-up
        seconds = timed(lambda: video(steps, c, deadline), c.device, 0, 1, deadline)
    shape = f"1 x {c.frames} frames, denoise + decode"
    return Result(name, precision, shape, seconds, peak_gib(c.device))


# ----------------------------------------------------------------------------- the run


def jobs(c: Check, precisions: list[str]) -> Iterator[tuple[str, str, Callable]]:
    """(stage, precision, run) in order of importance: the MCDM and sampling first."""
    order = ("mcdm", *SAMPLERS, *[s for s in TRAIN_STAGES + INFER_STAGES if s != "mcdm"])
    for precision in precisions:
        for stage in order:
            if stage in SAMPLERS:
                yield stage, precision, run_sampler
            else:
                yield stage, precision, run_train if stage in TRAIN_STAGES else run_infer


def run_job(stage: str, precision: str, run: Callable, c: Check, deadline: Deadline) -> Result:
    """``run`` as a Result; a skip, running out of budget or memory, or an error is a note."""
    if precision == "fp16" and c.device.type == "cpu":
        return Result(stage, precision, note="skipped: fp16 autocast is off on the CPU")
    log.info("%s %s (%.0f s)", stage, precision, time.perf_counter() - deadline.start)
    reset_memory(c.device)
    try:
        deadline.check()
        return run(stage, precision, c, deadline)
    except OutOfBudget:
        return Result(stage, precision, note=f"skipped: --budget-s {deadline.budget_s:g} spent")
    except torch.cuda.OutOfMemoryError:
        return Result(stage, precision, note="error: out of memory")
    except Exception as err:  # one stage's failure must not cost the other figures
        log.error("%s %s failed:\n%s", stage, precision, traceback.format_exc())
        first_line = (str(err).splitlines() or [""])[0].replace("|", "/")  # a table cell
        return Result(stage, precision, note=f"error: {type(err).__name__}: {first_line}"[:120])
    finally:
        reset_memory(c.device)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    """``--peak-tflops``, else the known peak of the device's name, else None."""
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


# ----------------------------------------------------------------------------- report


def number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(results: list[Result]) -> list[str]:
    """Markdown table of the stages, in pipeline order, then precision."""
    rank = {s: i for i, s in enumerate(TRAIN_STAGES + INFER_STAGES)}
    rows = sorted((r for r in results if r.stage in rank),
                  key=lambda r: (rank[r.stage], r.precision))  # fmt: skip
    lines = ["| stage | kind | precision | shape | s/step | peak GiB | note |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        kind = "train" if r.stage in TRAIN_STAGES else "infer"
        cells = [r.stage, kind, r.precision, r.shape, number(r.seconds, ".4f"),
                 number(r.memory_gib, ".2f"), r.note]  # fmt: skip
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def memory(r: Result) -> str:
    return "n/a on the CPU" if r.memory_gib is None else f"{r.memory_gib:.2f} GiB"


def throughput_line(r: Result, peak: float | None) -> str:
    """MCDM training samples/s, peak memory and MFU (fwd + bwd = 3 x forward FLOPs)."""
    head = f"mcdm training {r.precision}:"
    if r.seconds is None:
        return f"{head} {r.note}"
    achieved = 3 * r.forward_flops / r.seconds / 1e12  # TFLOP/s
    mfu = "unknown (pass --peak-tflops)" if peak is None else f"{100 * achieved / peak:.1f}%"
    return (f"{head} {r.shape}: {r.samples / r.seconds:.3f} samples/s, "
            f"{r.seconds:.4f} s/step, peak memory {memory(r)}, "
            f"{achieved:.3f} TFLOP/s achieved, MFU {mfu}")  # fmt: skip


def sampling_line(r: Result, steps: int) -> str:
    head = f"sampling {r.precision} {r.stage} {steps} steps:"
    if r.seconds is None:
        return f"{head} {r.note}"
    return f"{head} {r.seconds:.3f} s/video ({r.shape}), peak memory {memory(r)}"


def report(results: list[Result], c: Check, peak: float | None) -> list[str]:
    lines = [*table(results), ""]
    lines += [throughput_line(r, peak) for r in results if r.stage == "mcdm"]
    lines += [sampling_line(r, c.sampler_steps[r.stage]) for r in results if r.stage in SAMPLERS]
    skipped = [f"{r.stage} {r.precision}" for r in results if r.note.startswith("skipped: --")]
    if skipped:
        lines.append(f"budget spent; skipped: {', '.join(skipped)}")
    return lines


def header(args: argparse.Namespace, c: Check, peak: float | None) -> str:
    name = torch.cuda.get_device_name(c.device) if c.device.type == "cuda" else "cpu"
    return (f"gpu_check: {name}, torch {torch.__version__}, preset "
            f"{'tiny' if args.tiny else 'paper'}, threads {torch.get_num_threads()}, "
            f"peak {number(peak, 'g')} TFLOP/s, budget {args.budget_s:g} s")  # fmt: skip


# ----------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="where to run (default: cuda; cpu for the smoke test)",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="the tiny preset's shapes and few steps, instead of the paper preset's",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=list(DTYPES),
        default=list(DTYPES),
        help="autocast precisions (default: bf16 fp16; fp16 is skipped on the CPU)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="MCDM training batch (default: the preset's mcdm_train batch_size)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="MCDM window and sampled video length (default: the preset's)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps of each other stage (default: 3; --tiny: 1)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    p.add_argument(
        "--throughput-steps",
        type=int,
        default=None,
        help="timed MCDM training steps (default: 10; --tiny: 2)",
    )
    p.add_argument(
        "--ddpm-steps", type=int, default=None, help="DDPM sampling steps (default: 128; --tiny: 4)"
    )
    p.add_argument(
        "--dpm-steps",
        type=int,
        default=None,
        help="DPM-Solver++ sampling steps (default: 25; --tiny: 2)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak TFLOP/s in the precision, for MFU "
        "(default: known for H200, H100, B200, A100, L40S; else unknown)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="seconds for all checks (after start-up; the step in flight finishes), "
        "then the rest is listed as skipped (default: 480)",
    )
    return p


def settings(args: argparse.Namespace) -> Check:
    """The Check of the parsed options (scale defaults resolved, preset loaded)."""
    scale = 1 if args.tiny else 0
    for name, defaults in SCALE_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[scale])
    params = preset_params("tiny" if args.tiny else "paper")
    return Check(
        device=torch.device(args.device),
        params=params,
        batch=args.batch or params.mcdm_train.train.batch_size,
        frames=args.frames or params.mcdm_train.model.num_frames,
        steps=args.steps,
        warmup=args.warmup,
        throughput_steps=args.throughput_steps,
        sampler_steps={"ddpm": args.ddpm_steps, "dpmsolver++": args.dpm_steps},
    )


def main() -> int:
    args = parse_device_args(parser())
    log.setLevel(logging.INFO)
    c = settings(args)
    deadline = Deadline(args.budget_s)
    peak = peak_tflops(c.device, args.peak_tflops)
    results = [run_job(*job, c, deadline) for job in jobs(c, args.precisions)]
    print("\n".join([header(args, c, peak), "", *report(results, c, peak)]))
    return 1 if any(r.note.startswith("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
