"""Typed, read-only parameters: one pydantic model per params.yaml section.

Every model forbids unknown keys and is frozen, so a typo in params.yaml or in
``dvc exp run -S`` stops the stage with a message naming the key, and no stage can
mutate its configuration while it runs. Defaults live here and only here; params.yaml
states the values the pipeline runs with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from .section import Fraction, Section, Split

if TYPE_CHECKING:
    from .params import Params

__all__ = ["Fraction", "ParamsError", "Section", "Split", "load_params", "validate_params"]


class SharedParams(Section):
    seed: int = Field(0, description="Seed of every random choice in the pipeline.")
    device: str = Field(
        "auto",
        min_length=1,
        description="Device of the inference stages (latents, features, flow_export, "
        "reid_export, sample, evaluate): auto (the GPU when there is one), cpu, cuda, cuda:N. "
        "Training stages use accelerate's choice (one GPU per process).",
    )
    pseudo_label_frames: Literal["resampled", "native"] = Field(
        "resampled",
        description="Frames of the stages that learn from or label ED/mid/ES pairs (flow_train, "
        "flow_export, reid_train, reid_export, mafe_train, features): resampled: the store at "
        "prepare.target_fps, ED/ES snapped to the nearest kept frame; native: the source-rate "
        "frames with the exact traced ED/ES (needs prepare.native_frames). The generator "
        "stages always read the resampled store.",
    )


class PhantomParams(Section):
    """The synthetic echo phantom written in EchoNet-Dynamic layout."""

    n_videos: int = Field(64, ge=3)
    fps: float = Field(50.0, gt=0)
    duration_s: tuple[float, float] = Field((1.8, 2.6), description="Clip length range.")
    heart_rate_bpm: tuple[float, float] = (55.0, 110.0)
    ef_percent: tuple[float, float] = (20.0, 80.0)
    size: int = Field(112, ge=32)
    split_fractions: tuple[Fraction, Fraction, Fraction] = Field(
        (0.75, 0.125, 0.125), description="TRAIN, VAL, TEST."
    )
    codec: Literal["mjpeg", "ffv1"] = "mjpeg"

    @model_validator(mode="after")
    def _check(self) -> PhantomParams:
        for name in ("duration_s", "heart_rate_bpm", "ef_percent"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be an increasing positive range, got {[lo, hi]}")
        if abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must sum to 1, got {self.split_fractions}")
        return self


class DataParams(Section):
    """Where the EchoNet-Dynamic-layout dataset lives (the phantom by default)."""

    root: str = "data/phantom/echonet"


class PrepareParams(Section):
    """Decoding, resampling and storing the videos."""

    target_fps: float | None = Field(25.0, gt=0, description="None keeps each video's rate.")
    size: int = Field(112, ge=16)
    min_frames: int = Field(16, ge=2, description="Fewer frames after resampling: rejected.")
    ef_range: tuple[float, float] = (0.0, 100.0)
    shard_frames: int = Field(2048, ge=1, description="Frames per shard file of the store.")
    chunk_frames: int = Field(16, ge=1, description="Frames per compressed chunk.")
    ed_es: Literal["tracings", "auto"] = Field(
        "tracings",
        description="tracings: ED/ES from VolumeTracings, the label-free detector where a "
        "video has none; auto: the detector for every video (no labels used).",
    )
    low_fps: Literal["repeat", "native"] = Field(
        "repeat",
        description="A video below target_fps: repeat: brought up to target_fps by repeating "
        "the nearest source frame (stored fps = target_fps); native: stored at its own rate "
        "(stored fps = source fps), never upsampled. Videos above target_fps are always "
        "downsampled.",
    )
    workers: int = Field(
        1,
        ge=1,
        description="Processes decoding videos; any number gives the same store bytes.",
    )
    native_frames: bool = Field(
        False,
        description="Also store every video at its source frame rate (same size, exact traced "
        "ED/ES) as the nested store videos.zarr/native, from the same decode; the resampled "
        "store is unchanged. Read when shared.pseudo_label_frames is native.",
    )

    @model_validator(mode="after")
    def _check(self) -> PrepareParams:
        if self.shard_frames % self.chunk_frames:
            raise ValueError(
                f"shard_frames ({self.shard_frames}) must be a multiple of "
                f"chunk_frames ({self.chunk_frames})"
            )
        return self


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the file, the key and the reason."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raise :class:`ParamsError` naming every bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ParamsError(f"{path}: cannot read params ({err})") from err
    return validate_params(raw, path)


def validate_params(raw: dict, source: str | Path = "params") -> Params:
    """Validate a parsed params document; :class:`ParamsError` names every bad key."""
    from .params import Params  # imports every stage's code: deferred to first use

    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<root>"
            got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
            lines.append(f"  {key}: {e['msg']}{got}")
        raise ParamsError(f"{source}: invalid parameters\n" + "\n".join(lines)) from None


def write_used_params(section: BaseModel, path: str | Path) -> None:
    """Write the configuration a stage actually ran with beside its outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(section.model_dump(mode="json"), indent=2) + "\n")
