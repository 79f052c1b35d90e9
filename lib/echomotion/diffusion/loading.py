"""The motion normalisation of training, and loading the saved pipeline with a sampler.

The MCDM is conditioned on ``(motion - mean) / std`` with the TRAIN statistics of the
features store. Training normalises with :class:`MotionNormalizer`; the saved pipeline keeps
the same statistics and the frame size the VAE was trained at in its config
(``model_index.json``: ``motion_mean``, ``motion_std``, ``frame_size``) and normalises the
raw motion vectors it is given with the same function, exactly as training did. With
``mcdm_train.normalize_motion: false`` (the official code feeds the motion raw) the
statistics are the identity (mean 0, std 1), so ``(motion - 0) / 1`` is the motion, bit for
bit, in training and in the pipeline.

The training schedule's ``clip_sample`` / ``clip_sample_range`` reach the sampler through
the scheduler config (``ddpm`` and ``ddim`` take them). ``dpmsolver++`` has no fixed clipping:
its ``thresholding`` divides x0 by a per-sample quantile (Imagen's dynamic thresholding), a
different operation, so it samples unclipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, SchedulerMixin

from echomotion.diffusion.params import SamplerName
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline, normalize_motion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotionNormalizer:
    """``(motion - mean) / std`` per channel, plus the frame size ``(H, W)`` of the model."""

    mean: np.ndarray  # (D,) float32
    std: np.ndarray  # (D,) float32, > 0
    frame_size: tuple[int, int]

    def __post_init__(self) -> None:
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ValueError(f"mean {self.mean.shape} and std {self.std.shape} must be (D,)")
        if not (self.std > 0).all():
            raise ValueError("motion std must be positive in every channel")

    @property
    def dim(self) -> int:
        return len(self.mean)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], frame_size: tuple[int, int]) -> MotionNormalizer:
        """From the features store's ``motion_mean`` / ``motion_std`` attributes."""
        mean = np.asarray(attrs["motion_mean"], dtype=np.float32)
        return cls(mean, np.asarray(attrs["motion_std"], dtype=np.float32), tuple(frame_size))

    @classmethod
    def identity(cls, dim: int, frame_size: tuple[int, int]) -> MotionNormalizer:
        """Mean 0, std 1 in each of ``dim`` channels: the motion is used raw."""
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32), tuple(frame_size))

    def __call__(self, motion: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised float32 motion ``(..., D)`` (the pipeline's own normalisation)."""
        return normalize_motion(motion, torch.from_numpy(self.mean), torch.from_numpy(self.std))


_SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
}


def sampling_scheduler(config: dict[str, Any], name: SamplerName) -> SchedulerMixin:
    """A ``name`` scheduler over the training noise schedule ``config`` (same prediction type)."""
    if name not in _SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(_SCHEDULERS)}, got {name!r}")
    cls, extra = _SCHEDULERS[name]
    if config.get("clip_sample") and name == "dpmsolver++":
        logger.warning(
            "the schedule asks for clip_sample (+-%s), which dpmsolver++ lacks: it samples "
            "unclipped (ddpm and ddim clip)",
            config.get("clip_sample_range"),
        )
    return cls.from_config(config, **extra)


def load_pipeline(path: str | Path, scheduler: SamplerName) -> MotionConditionedVideoPipeline:
    """The pipeline ``mcdm_train`` saved (eval mode, no progress bar) with the chosen sampler;
    it normalises raw motion itself. Raises FileNotFoundError naming the folder when it is
    missing, ValueError when its config lacks the motion statistics or the frame size (a
    folder saved before they moved from ``conditioning.json`` into ``model_index.json``:
    train it again)."""
    path = Path(path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path}: not a saved pipeline (no model_index.json)")
    config = MotionConditionedVideoPipeline.load_config(path)
    missing = [k for k in ("motion_mean", "frame_size") if config.get(k) is None]
    if missing:
        raise ValueError(
            f"{path}/model_index.json has no {' or '.join(missing)}: a pipeline saved by an "
            "older mcdm_train (with conditioning.json); run mcdm_train again"
        )
    pipe = MotionConditionedVideoPipeline.from_pretrained(path)
    pipe.scheduler = sampling_scheduler(pipe.scheduler.config, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
