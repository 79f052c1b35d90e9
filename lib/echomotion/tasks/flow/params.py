"""Params sections of the flow stages (``flow_train``, ``flow_export`` in params.yaml)."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, field_validator

from ...flow.params import FlowLossParams, FlowProviderParams, LossStage, SegmentParams
from ...section import Section
from ...training.params import LaunchParams, TrainParams


class PWCLiteParams(Section):
    """Architecture of the flow network: the arguments of :class:`echomotion.flow.PWCLite`."""

    pyramid_channels: tuple[int, ...] = Field(
        (16, 32, 48, 64), description="Feature channels per pyramid level, finest first."
    )
    max_displacement: int = Field(3, ge=1, description="Cost-volume search radius per level.")
    feature_channels: int = Field(32, ge=1, description="1x1 projection fed to the estimator.")
    estimator_channels: tuple[int, ...] = (64, 48, 32)
    context_channels: tuple[int, ...] = (48, 48, 32, 16)
    context_dilations: tuple[int, ...] = (1, 2, 4, 8)
    estimator_connectivity: Literal["chain", "reduce"] = Field(
        "chain", description="reduce: each estimator conv reads the previous two (UnSAMFlow)."
    )
    output_level: int = Field(
        0, ge=0, description="Finest pyramid level decoded (0: stride 2, 1: stride 4)."
    )
    learned_upsampler: bool = Field(
        False, description="Convex (RAFT) upsampling by 2**(output_level+1); False: bilinear."
    )
    upsampler_channels: int = Field(128, ge=1, description="Hidden width of the upsampler.")
    upsampler_feature_layer: int = Field(
        -1, description="Context layer whose output the upsampler reads (-1: last hidden)."
    )


class FlowTrainParams(Section):
    """Unsupervised training of PWCLite on frame pairs of the TRAIN videos."""

    model: PWCLiteParams = PWCLiteParams()
    loss: FlowLossParams = FlowLossParams()
    segments: SegmentParams = SegmentParams()
    loss_schedule: tuple[LossStage, ...] = Field(
        (),
        description="Stages of loss weights by optimizer step, applied over `loss` in turn; "
        "empty: `loss` throughout.",
    )
    max_gap: int = Field(4, ge=1, description="Random pairs are (t, t + gap), gap in [1, max_gap].")
    edes_fraction: float = Field(
        0.25, ge=0, le=1, description="Share of items that are the mid->ED or mid->ES pair."
    )
    edes_pair: Literal["mid", "ed_es"] = Field(
        "mid",
        description="Those items' pair: mid->ED or mid->ES (the pairs the export scores), or "
        "ED->ES (UnSAMFlow's one pair per video, min->max traced frame).",
    )
    crop: int | None = Field(64, ge=16, description="Random square crop side; None: whole frames.")
    eval_videos: int = Field(4, ge=0, description="VAL videos scored after each checkpoint.")
    train: TrainParams = TrainParams(
        steps=800,
        batch_size=4,
        lr=4e-3,
        warmup_steps=20,
        lr_schedule="cosine",
        ema_decay=0.99,
        checkpoint_every=100,
        log_every=10,
    )
    launch: LaunchParams = LaunchParams()

    @field_validator("loss_schedule")
    @classmethod
    def _increasing(cls, stages: tuple[LossStage, ...]) -> tuple[LossStage, ...]:
        starts = [stage.from_step for stage in stages]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError(f"loss_schedule from_step must increase strictly, got {starts}")
        return stages

    def needs_segments(self) -> bool:
        """Whether the segment term is on at some step (segments are then computed)."""
        weights = [self.loss.w_segment, *(s.w_segment for s in self.loss_schedule)]
        return any(w is not None and w > 0 for w in weights)


class FlowExportParams(Section):
    """Which flow the pseudo labels come from; the metrics compare all providers."""

    provider: FlowProviderParams = FlowProviderParams()
