"""Params section ``flow_train``."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, field_validator

from echomotion.flow.params import FlowLossParams, LossStage, PWCLiteParams, SegmentParams
from echomotion.section import Section
from echomotion.training.params import LaunchParams, TrainParams


class FlowTrainParams(Section):
    """Unsupervised training of PWCLite on frame pairs of the TRAIN videos."""

    model: PWCLiteParams
    loss: FlowLossParams
    segments: SegmentParams
    loss_schedule: tuple[LossStage, ...] = Field(
        ...,
        description="Stages of loss weights by optimizer step, applied over `loss` in turn; "
        "empty: `loss` throughout.",
    )
    max_gap: int = Field(
        ..., ge=1, description="Random pairs are (t, t + gap), gap in [1, max_gap]."
    )
    edes_fraction: float = Field(
        ..., ge=0, le=1, description="Share of items that are the mid->ED or mid->ES pair."
    )
    edes_pair: Literal["mid", "ed_es"] = Field(
        ...,
        description="Those items' pair: mid->ED or mid->ES (the pairs the export scores), or "
        "ED->ES (UnSAMFlow's one pair per video, min->max traced frame).",
    )
    crop: int | None = Field(..., ge=16, description="Random square crop side; None: whole frames.")
    eval_videos: int = Field(..., ge=0, description="VAL videos scored after each checkpoint.")
    train: TrainParams
    launch: LaunchParams

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
