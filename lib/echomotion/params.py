"""The whole params.yaml as one model: the base sections of config.py plus each
stage's section, defined next to the code that reads it."""

from __future__ import annotations

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
