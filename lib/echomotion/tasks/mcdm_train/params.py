"""Params section ``mcdm_train``."""

from __future__ import annotations

from pydantic import Field, model_validator

from echomotion.diffusion.params import (
    MCDMLossParams,
    MCDMModelParams,
    NoiseScheduleParams,
    ReferenceFrame,
    ShortVideos,
    WindowAnchor,
)
from echomotion.section import Section
from echomotion.training.params import LaunchParams, TrainParams


class MCDMTrainParams(Section):
    """Stage ``mcdm_train``: the motion-conditioned video UNet on TRAIN latent windows.

    The window length is ``model.num_frames``; ``model.motion_dim`` must equal the
    ``motion_dim`` of the features store (checked before training).
    """

    model: MCDMModelParams
    schedule: NoiseScheduleParams
    loss: MCDMLossParams
    train: TrainParams
    launch: LaunchParams
    frame_stride: int = Field(
        ...,
        ge=1,
        description="Window frames are every stride-th stored frame: fps / stride, "
        "num_frames * stride / fps seconds per window.",
    )
    reference: ReferenceFrame = Field(
        ...,
        description="Reference frame: the window's first frame (the video starts at the "
        "reference) or a random frame of the same video.",
    )
    short_videos: ShortVideos = Field(
        ...,
        description="Videos with fewer frames than a window: 'drop' leaves them out; 'pad' "
        "keeps them, zero-pads their windows and leaves the padded frames out of the loss.",
    )
    random_phase: bool = Field(
        ...,
        description="Draw a window's phase (first frame modulo frame_stride) first, then its "
        "start on that frame grid, as the official resampling does; with 'pad', windows that "
        "run past the end are padded. A no-op at frame_stride 1.",
    )
    window_anchor: WindowAnchor = Field(
        ...,
        description="Where a training window starts: 'any' frame of the video (uniform over "
        "the full windows), or 'ed', a label-free end-diastole (echomotion.edes: peaks of the "
        "blood-pool area) from which a full window fits; the sample stage then takes its "
        "reference frames at a label-free ED too. Videos without a detected ED fall back to "
        "'any'.",
    )
    normalize_motion: bool = Field(
        ...,
        description="Standardise the motion vector with the TRAIN statistics; False: raw "
        "(the official code), and the pipeline keeps identity statistics.",
    )

    @model_validator(mode="after")
    def _motion_balance_needs_residuals(self) -> MCDMTrainParams:
        if self.loss.motion_balance > 0 and not self.model.residual:
            raise ValueError(
                f"loss.motion_balance ({self.loss.motion_balance}) weighs windows by their "
                "residual from the reference: set model.residual true, or motion_balance 0"
            )
        return self

    @model_validator(mode="after")
    def _ed_windows_have_no_phase_draw(self) -> MCDMTrainParams:
        if self.window_anchor == "ed" and self.random_phase:
            raise ValueError(
                "window_anchor 'ed' starts each window at a detected ED frame, random_phase "
                "draws its start: set random_phase false, or window_anchor 'any'"
            )
        if self.window_anchor == "ed" and self.reference != "window_start":
            raise ValueError(
                "window_anchor 'ed' anchors the reference frame (the window's first frame) at "
                "ED: set reference 'window_start'"
            )
        return self
