"""Stage ``mcdm_train``: the motion-conditioned video UNet on windows of TRAIN latents.

Runs on one process or many (``accelerate launch --multi_gpu``, ``torchrun``): every
process holds the latents and motion vectors in memory; only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from echomotion.device import process_state
from echomotion.diffusion.losses import build_scheduler, mcdm_loss
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline
from echomotion.diffusion.unet import build_unet
from echomotion.store import RaggedStore
from echomotion.tasks.mafe.features import video_motion
from echomotion.training.checkpoint import save_pretrained, write_dir_atomically
from echomotion.training.loop import train_section

from .conditioning import MotionNormalizer
from .latents import load_vae
from .params import MCDMTrainParams, ReferenceFrame

logger = logging.getLogger(__name__)


class LatentClipDataset(Dataset):
    """Random windows of ``n_frames`` latents taken every ``stride`` frames, one item per video.

    Item: ``latents`` ``(T, C, h, w)`` float32 (a random window), ``ref_latent``
    ``(C, h, w)`` (the window's first frame when ``reference`` is ``"window_start"``, else a
    random frame of the same video), ``motion`` ``(D,)`` (the video's normalised motion
    vector) and ``fps`` ``()`` (the window's frame rate: the video's fps / ``stride``).
    Randomness comes from the global torch generator, which the training loop seeds per item.
    """

    def __init__(
        self,
        latents: np.ndarray,
        offsets: np.ndarray,
        videos: np.ndarray,
        motion: torch.Tensor,
        fps: np.ndarray,
        n_frames: int,
        stride: int = 1,
        reference: ReferenceFrame = "window_start",
    ):
        span = window_span(n_frames, stride)
        lengths = offsets[videos + 1] - offsets[videos]
        if (lengths < span).any():
            raise ValueError(f"videos {videos[lengths < span].tolist()} are < {span} frames")
        if not len(videos) == len(motion) == len(fps):
            raise ValueError(f"{len(videos)} videos, {len(motion)} motions, {len(fps)} fps")
        self.latents, self.offsets, self.videos = latents, offsets, videos
        self.motion, self.fps, self.n_frames = motion, fps, n_frames
        self.stride, self.reference = stride, reference

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video = self.videos[index]
        first, length = int(self.offsets[video]), int(np.diff(self.offsets[video : video + 2])[0])
        span = window_span(self.n_frames, self.stride)
        start = first + int(torch.randint(0, length - span + 1, ()))
        ref = first + int(torch.randint(0, length, ()))
        if self.reference == "window_start":
            ref = start
        return {
            "latents": torch.from_numpy(self.latents[start : start + span : self.stride]).float(),
            "ref_latent": torch.from_numpy(self.latents[ref]).float(),
            "motion": self.motion[index],
            "fps": torch.tensor(float(self.fps[index]) / self.stride),
        }


def window_span(n_frames: int, stride: int) -> int:
    """Stored frames a window of ``n_frames`` taken every ``stride`` frames covers."""
    return (n_frames - 1) * stride + 1


@dataclass(frozen=True)
class ClipData:
    """The training set and what the saved pipeline needs to know about it."""

    dataset: LatentClipDataset
    normalizer: MotionNormalizer
    fps: float  # median frame rate of the training videos (the pipeline's default fps id)


def _feature_rows(features: RaggedStore, latents: RaggedStore, splits: tuple[str, ...]):
    """Feature rows of ``splits`` and their videos, checked against the latents table."""
    rows = np.flatnonzero(np.isin(features.table["split"].astype(str), splits))
    videos = features.table["video"][rows].astype(np.int64)
    for row, video in zip(rows, videos, strict=True):
        ours, theirs = features.table["file_name"][row], latents.table["file_name"][video]
        if ours != theirs:
            raise ValueError(
                f"features row {row} ({ours}) points at latents video {video} ({theirs}): "
                "the stores come from different prepared datasets"
            )
    return rows, videos


def load_clip_data(
    latents_path: str | Path,
    features_path: str | Path,
    n_frames: int,
    splits: tuple[str, ...] = ("TRAIN",),
    stride: int = 1,
    reference: ReferenceFrame = "window_start",
) -> ClipData:
    """Latent windows (``n_frames`` every ``stride`` frames) of the videos of ``splits``
    that have a motion vector and are long enough; motion normalised with the features
    store's TRAIN statistics. ``ClipData.fps`` is the windows' median frame rate."""
    latents = RaggedStore(latents_path).load("latents")
    features = RaggedStore(features_path).load("motion")
    rows, videos = _feature_rows(features, latents, splits)
    span = window_span(n_frames, stride)
    long_enough = latents.lengths()[videos] >= span
    if not long_enough.all():
        logger.warning("%d videos shorter than %d frames left out", (~long_enough).sum(), span)
    rows, videos = rows[long_enough], videos[long_enough]
    if len(rows) == 0:
        raise ValueError(f"{features_path}: no {splits} video with motion and >= {span} frames")
    normalizer = MotionNormalizer.from_attrs(features.attrs, latents.attrs["frame_size"])
    motion = normalizer(video_motion(features)[rows])  # (n, D)
    fps = latents.table["fps"][videos]
    dataset = LatentClipDataset(
        latents.frames("latents", 0, int(latents.offsets[-1])),
        latents.offsets,
        videos,
        motion,
        fps,
        n_frames,
        stride,
        reference,
    )
    return ClipData(dataset, normalizer, float(np.median(fps)) / stride)


def save_pipeline(pipe: MotionConditionedVideoPipeline, path: Path):
    """``save_pretrained`` (self-contained: motion statistics in ``model_index.json`` and the
    loader module), written to a temporary folder and renamed."""
    write_dir_atomically(Path(path), partial(save_pretrained, pipe))


def train_mcdm(
    latents_path: str | Path,
    features_path: str | Path,
    vae_dir: str | Path,
    params: MCDMTrainParams,
    *,
    out_dir: str | Path,
    log_file: str | Path,
    seed: int,
) -> dict[str, float]:
    """Train the MCDM; rank 0 writes ``out_dir/pipeline`` (VAE + EMA UNet + DDPM scheduler).

    Returns the metrics: ``steps``, ``resumed_from`` (-1: fresh start), last curve
    ``loss`` (NaN when no step was run), ``train_videos``, ``motion_dim``, ``fps``.
    """
    # 1. data and a check of the conditioning width
    data = load_clip_data(
        latents_path,
        features_path,
        params.model.num_frames,
        stride=params.frame_stride,
        reference=params.reference,
    )
    if data.normalizer.dim != params.model.motion_dim:
        raise ValueError(
            f"mcdm_train.model.motion_dim ({params.model.motion_dim}) must equal the motion_dim "
            f"of {features_path} ({data.normalizer.dim})"
        )
    # 2. train
    torch.manual_seed(seed)
    unet = build_unet(params.model)
    scheduler = build_scheduler(params.schedule)
    result = train_section(
        unet,
        data.dataset,
        partial(mcdm_loss, scheduler=scheduler, params=params.loss),
        params,
        out_dir=out_dir,
        seed=seed,
        log_file=log_file,
        name="mcdm",
    )
    # 3. the sampling pipeline, from the final (EMA) weights
    if process_state().is_main_process:
        pipe = MotionConditionedVideoPipeline(
            vae=load_vae(vae_dir),
            unet=unet.eval(),
            scheduler=scheduler,
            fps=data.fps,
            reference=params.reference,
            motion_mean=data.normalizer.mean.tolist(),
            motion_std=data.normalizer.std.tolist(),
            frame_size=list(data.normalizer.frame_size),
        )
        save_pipeline(pipe, Path(out_dir) / "pipeline")
    process_state().wait_for_everyone()
    last = result.history[-1]["loss"] if result.history else math.nan
    return {
        "steps": result.step,
        "resumed_from": -1 if result.resumed_from is None else result.resumed_from,
        "loss": last,
        "train_videos": len(data.dataset),
        "motion_dim": data.normalizer.dim,
        "fps": data.fps,
    }
