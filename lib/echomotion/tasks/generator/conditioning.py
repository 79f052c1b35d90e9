"""What a saved pipeline needs beyond diffusers' files: the motion normalisation.

The MCDM is conditioned on ``(motion - mean) / std`` with the TRAIN statistics of the
features store. ``models/mcdm/pipeline/conditioning.json`` keeps them, with the frame size
the VAE was trained at, so sampling and the ``generate`` command normalise motion vectors
exactly as training did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, SchedulerMixin

from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline

from .params import SamplerName

CONDITIONING_FILE = "conditioning.json"


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

    def __call__(self, motion: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised float32 motion ``(..., D)``."""
        motion = torch.as_tensor(motion, dtype=torch.float32)
        if motion.shape[-1] != self.dim:
            raise ValueError(f"motion has {motion.shape[-1]} channels, the model takes {self.dim}")
        mean, std = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        return (motion - mean.to(motion.device)) / std.to(motion.device)

    def save(self, directory: str | Path) -> None:
        data = {
            "motion_mean": self.mean.tolist(),
            "motion_std": self.std.tolist(),
            "frame_size": list(self.frame_size),
        }
        (Path(directory) / CONDITIONING_FILE).write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> MotionNormalizer:
        data = json.loads((Path(directory) / CONDITIONING_FILE).read_text())
        return cls.from_attrs(data, data["frame_size"])


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
    return cls.from_config(config, **extra)


def load_pipeline(
    path: str | Path, scheduler: SamplerName
) -> tuple[MotionConditionedVideoPipeline, MotionNormalizer]:
    """The saved pipeline (eval mode, no progress bar) with the chosen sampler, and its
    motion normalisation. Raises FileNotFoundError naming the folder when it is missing."""
    path = Path(path)
    if not (path / "model_index.json").is_file() or not (path / CONDITIONING_FILE).is_file():
        raise FileNotFoundError(
            f"{path}: not a saved pipeline (model_index.json, {CONDITIONING_FILE})"
        )
    pipe = MotionConditionedVideoPipeline.from_pretrained(path)
    pipe.scheduler = sampling_scheduler(pipe.scheduler.config, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, MotionNormalizer.load(path)
