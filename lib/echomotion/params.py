"""The whole params.yaml as one model: the base sections of config.py plus each
stage's section, defined next to the code that reads it."""

from __future__ import annotations

from .config import DataParams, PhantomParams, PrepareParams, SharedParams
from .section import Section
from .tasks.evaluate import EvaluateParams
from .tasks.flow import FlowExportParams, FlowTrainParams
from .tasks.generator import (
    LatentsParams,
    MCDMTrainParams,
    SampleParams,
    VAETrainParams,
)
from .tasks.mafe import FeaturesParams, MAFETrainParams
from .tasks.reid import ReIDExportParams, ReIDTrainParams


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
