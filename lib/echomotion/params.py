"""The whole params.yaml as one model: the base sections of config.py plus each
stage's section, defined next to the code that reads it."""

from __future__ import annotations

from pydantic import model_validator

from echomotion.tasks.evaluate.params import EvaluateParams
from echomotion.tasks.flow.params import FlowExportParams, FlowTrainParams
from echomotion.tasks.generator.params import (
    LatentsParams,
    MCDMTrainParams,
    SampleParams,
    VAETrainParams,
)
from echomotion.tasks.mafe.params import FeaturesParams, MAFETrainParams
from echomotion.tasks.reid.params import ReIDExportParams, ReIDTrainParams

from .config import DataParams, PhantomParams, PrepareParams, SharedParams
from .section import Section


class Params(Section):
    """The whole params.yaml: one section per stage plus ``shared``."""

    shared: SharedParams = SharedParams()
    phantom: PhantomParams = PhantomParams()
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    flow_train: FlowTrainParams = FlowTrainParams()
    flow_export: FlowExportParams = FlowExportParams()
    reid_train: ReIDTrainParams = ReIDTrainParams()
    reid_export: ReIDExportParams = ReIDExportParams()
    mafe_train: MAFETrainParams = MAFETrainParams()
    features: FeaturesParams = FeaturesParams()
    vae_train: VAETrainParams = VAETrainParams()
    latents: LatentsParams = LatentsParams()
    mcdm_train: MCDMTrainParams = MCDMTrainParams()
    sample: SampleParams = SampleParams()
    evaluate: EvaluateParams = EvaluateParams()

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
