"""Params section of the ``evaluate`` stage (registered in ``echomotion.params.Params``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from echomotion.evaluation.params import (
    EFRegressorParams,
    LVSegmenterParams,
    TorchScriptExtractorParams,
)
from echomotion.flow.params import FlowProviderParams
from echomotion.section import Section, Split
from echomotion.training.params import TrainParams


class RealismParams(Section):
    """FID-style (frames) and FVD-style (clips) Frechet distances."""

    n_frames: int = Field(512, ge=2, description="Generated frames (StyleGAN-V: 50000).")
    n_clips: int = Field(128, ge=2, description="Generated clips (StyleGAN-V: 2048).")
    reference_split: Split = Field("TRAIN", description="Real videos the sets are compared to.")
    baseline_split: Split = Field("TEST", description="Real videos scored like the synthetic.")
    max_reference_frames: int | None = Field(
        1024, ge=2, description="Real reference frames drawn; None: all (the '_full' protocol)."
    )
    reference_clips: int = Field(256, ge=2, description="Real reference clips.")
    inception: TorchScriptExtractorParams | None = Field(
        None, description="Inception (FID, IS): a local or downloaded TorchScript file."
    )
    i3d: TorchScriptExtractorParams | None = Field(
        None, description="I3D (FVD): a local or downloaded TorchScript file."
    )
    fvd_frames: tuple[int, ...] | None = Field(
        None,
        description="Clip lengths of the I3D FVD (StyleGAN-V: 16 and 128), only videos at "
        "least that long drawn; None: clip_frames (the EF network's clips).",
    )
    inception_score: bool = Field(
        False, description="Also the Inception Score of the generated frames (needs inception)."
    )

    @field_validator("fvd_frames")
    @classmethod
    def _lengths(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or min(value) < 2):
            raise ValueError(f"fvd_frames needs lengths >= 2, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _score_needs_inception(self) -> RealismParams:
        if self.inception_score and self.inception is None:
            raise ValueError("inception_score: true needs an inception extractor")
        return self


class MotionParams(Section):
    """Motion fidelity: MAFE vector cosine and ED->ES flow EPE."""

    flow: FlowProviderParams = FlowProviderParams()


class EFParams(Section):
    """EF regressors (real-trained and synthetic-trained) and their test protocol."""

    model: EFRegressorParams = EFRegressorParams()
    train: TrainParams = TrainParams(
        steps=250,
        batch_size=8,
        lr=1e-3,
        weight_decay=1e-4,
        warmup_steps=10,
        lr_schedule="cosine",
        checkpoint_every=125,
        log_every=25,
    )
    test_clips: int = Field(4, ge=1, description="Evenly spaced clips averaged per video.")
    downstream: bool = Field(True, description="Also train on synthetic only, test on real.")
    min_labelled: int = Field(
        2,
        ge=1,
        description="Fewest videos with an EF label to train a regressor on or to score it on; "
        "fewer: the EF metrics (and the EF-network clip distance) are reported as skipped.",
    )


class LVParams(Section):
    """The LV-area EF estimator: a segmenter trained on the traced frames of real TRAIN
    videos, EF from the area curve, calibrated on TRAIN EF labels."""

    model: LVSegmenterParams = LVSegmenterParams()
    train: TrainParams = TrainParams(
        steps=300,
        batch_size=8,
        lr=3e-3,
        weight_decay=1e-4,
        warmup_steps=10,
        lr_schedule="cosine",
        checkpoint_every=150,
        log_every=25,
    )
    augment: bool = Field(True, description="Shift, blur and gamma/gain jitter of the frames.")
    area_power: float = Field(
        1.5, gt=0, description="EF_raw = 1 - (A_min / A_max)^power (volume ~ area^1.5)."
    )
    area: Literal["largest", "soft"] = Field(
        "largest",
        description="LV area of a frame: pixels of the largest connected region of LV "
        "probability > 0.5 (largest), or the sum of every pixel's probability (soft, the "
        "former measure); echomotion.evaluation.lv.areas_of.",
    )
    min_traced: int = Field(
        2, ge=1, description="Fewest TRAIN videos with tracings to train on; fewer: skipped."
    )
    bootstrap: int = Field(
        2000,
        ge=0,
        description="Resamples of the videos for the 95 % intervals of the EF R-squared and "
        "MAE on real VAL/TEST and of each synthetic mode (0: no intervals).",
    )


class TransferParams(Section):
    """Appearance kept (ReID) and self-mode reconstruction (SSIM) of the synthetic videos."""

    frames_per_video: int = Field(
        16, ge=1, description="Evenly spaced frames averaged into a ReID video embedding."
    )


class PrivacyParams(Section):
    """ReID nearest-neighbour privacy check (EchoNet-Synthetic's rule)."""

    percentile: float = Field(95.0, ge=0, le=100, description="Of real TEST-to-TRAIN maxima.")
    frames_per_video: int = Field(8, ge=1, description="Frames averaged per video embedding.")
    filter_flagged: bool = Field(True, description="Leave flagged videos out of the copy.")
    histogram_bins: int = Field(40, ge=2, description="Bins over [-1, 1] of privacy_hist.csv.")


class EvaluateParams(Section):
    """Stage ``evaluate``."""

    clip_frames: int = Field(..., ge=2, description="Frames per clip (FVD and EF regressor).")
    batch_size: int = Field(..., ge=1, description="Items per forward pass of inference.")
    realism: RealismParams
    motion: MotionParams
    ef: EFParams
    lv: LVParams
    transfer: TransferParams
    privacy: PrivacyParams
