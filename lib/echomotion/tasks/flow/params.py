"""Params sections of the flow stages (``flow_train``, ``flow_export`` in params.yaml)."""

from __future__ import annotations

from pydantic import Field

from ...flow.params import FlowLossParams, FlowProviderParams, SegmentParams
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


class FlowTrainParams(Section):
    """Unsupervised training of PWCLite on frame pairs of the TRAIN videos."""

    model: PWCLiteParams = PWCLiteParams()
    loss: FlowLossParams = FlowLossParams()
    segments: SegmentParams = SegmentParams()
    max_gap: int = Field(4, ge=1, description="Random pairs are (t, t + gap), gap in [1, max_gap].")
    edes_fraction: float = Field(
        0.25, ge=0, le=1, description="Share of items that are the mid->ED or mid->ES pair."
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


class FlowExportParams(Section):
    """Which flow the pseudo labels come from; the metrics compare all providers."""

    provider: FlowProviderParams = FlowProviderParams()
