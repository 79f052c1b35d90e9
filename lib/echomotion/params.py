"""params.yaml as one typed, read-only model, and how it is read.

Each stage's section is defined in its task (``echomotion.tasks.<stage>.params``); the
sections every stage shares (``shared``, ``data``) are here. Sections have no code
defaults: params.yaml is the one home of every value the pipeline runs with, and a missing
key is an error naming it. Every model forbids unknown keys and is frozen, so a typo in
params.yaml or in ``dvc exp run -S`` stops the stage with a message naming the key, and no
stage can mutate its configuration while it runs. The component models nested in sections
(training loop, networks, losses) keep their library defaults, for code that builds them
outside the pipeline; such code takes a complete section with :func:`pipeline_section`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from echomotion.diffusion.params import guidance_refusal
from echomotion.section import Fraction, Section, Split
from echomotion.tasks.evaluate.params import EvaluateParams
from echomotion.tasks.features.params import FeaturesParams
from echomotion.tasks.flow_export.params import FlowExportParams
from echomotion.tasks.flow_train.params import FlowTrainParams
from echomotion.tasks.latents.params import LatentsParams
from echomotion.tasks.mafe_train.params import MAFETrainParams
from echomotion.tasks.mcdm_train.params import MCDMTrainParams
from echomotion.tasks.phantom.params import PhantomParams
from echomotion.tasks.prepare.params import PrepareParams
from echomotion.tasks.reid_export.params import ReIDExportParams
from echomotion.tasks.reid_train.params import ReIDTrainParams
from echomotion.tasks.sample.params import SampleParams
from echomotion.tasks.vae_train.params import VAETrainParams

SectionT = TypeVar("SectionT", bound=Section)

__all__ = [
    "Fraction",
    "ParamsError",
    "Section",
    "Split",
    "load_params",
    "pipeline_section",
    "validate_params",
    "with_updates",
]


class SharedParams(Section):
    seed: int = Field(..., description="Seed of every random choice in the pipeline.")
    device: str = Field(
        ...,
        min_length=1,
        description="Device of the inference stages (latents, features, flow_export, "
        "reid_export, sample, evaluate): auto (the GPU when there is one), cpu, cuda, cuda:N. "
        "Training stages use accelerate's choice (one GPU per process).",
    )
    pseudo_label_frames: Literal["resampled", "native"] = Field(
        ...,
        description="Frames of the stages that learn from or label ED/mid/ES pairs (flow_train, "
        "flow_export, reid_train, reid_export, mafe_train, features): resampled: the store at "
        "prepare.target_fps, ED/ES snapped to the nearest kept frame; native: the source-rate "
        "frames with the exact traced ED/ES (needs prepare.native_frames). The generator "
        "stages always read the resampled store.",
    )


class DataParams(Section):
    """Where the EchoNet-Dynamic-layout dataset lives (the phantom by default)."""

    root: str


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

    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "<root>"
            got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
            lines.append(f"  {key}: {e['msg']}{got}")
        raise ParamsError(f"{source}: invalid parameters\n" + "\n".join(lines)) from None


def with_updates(section: SectionT, **updates: Any) -> SectionT:
    """``section`` with ``updates`` (field -> value or sub-model) applied and validated
    (pydantic's ``model_copy(update=...)`` skips validation)."""
    return type(section).model_validate({**dict(section), **updates})


def pipeline_section(name: str, path: str | Path = "params.yaml", **updates: Any) -> Section:
    """Section ``name`` of the params file ``path`` with ``updates`` applied: how code
    outside the pipeline (tests, benchmarks) gets a complete section, since the sections
    take every value from params.yaml."""
    return with_updates(getattr(load_params(path), name), **updates)


def write_used_params(section: BaseModel, path: str | Path) -> None:
    """Write the configuration a stage actually ran with beside its outputs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(section.model_dump(mode="json"), indent=2) + "\n")


class Params(Section):
    """The whole params.yaml: one section per stage plus ``shared``."""

    shared: SharedParams
    phantom: PhantomParams
    data: DataParams
    prepare: PrepareParams
    flow_train: FlowTrainParams
    flow_export: FlowExportParams
    reid_train: ReIDTrainParams
    reid_export: ReIDExportParams
    mafe_train: MAFETrainParams
    features: FeaturesParams
    vae_train: VAETrainParams
    latents: LatentsParams
    mcdm_train: MCDMTrainParams
    sample: SampleParams
    evaluate: EvaluateParams

    @model_validator(mode="after")
    def _motion_width_agrees(self) -> Params:
        """The MCDM's token width is the motion vector MAFE gives (caught here, before
        hours of upstream stages, rather than when mcdm_train reads features.zarr)."""
        given = self.mafe_train.model.motion_vector_dim
        if self.mcdm_train.model.motion_dim != given:
            raise ValueError(
                f"mcdm_train.model.motion_dim ({self.mcdm_train.model.motion_dim}) must equal "
                f"the width of MAFE's motion vector ({given}: 2 frames x motion_ratio x the "
                "last two levels' widths, x 2 with mafe_train.model.flip_tta)"
            )
        return self

    @model_validator(mode="after")
    def _guidance_has_an_unconditional_branch(self) -> Params:
        """The sampling guidance needs the motion dropout of training
        (:func:`~echomotion.diffusion.params.guidance_refusal`)."""
        refusal = guidance_refusal(self.sample.guidance_scale, self.mcdm_train.loss.cond_dropout)
        if refusal:
            raise ValueError(
                f"sample.{refusal} (mcdm_train.loss.cond_dropout): set sample.guidance_scale: "
                "1.0 (guidance off) or mcdm_train.loss.cond_dropout > 0 (default 0.3)"
            )
        return self
