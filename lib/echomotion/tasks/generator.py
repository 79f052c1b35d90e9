"""Stages of the generator group (being written)."""

from ..section import Section


class VAETrainParams(Section):
    """Params of the stage (fields to be added)."""


class LatentsParams(Section):
    """Params of the stage (fields to be added)."""


class MCDMTrainParams(Section):
    """Params of the stage (fields to be added)."""


class SampleParams(Section):
    """Params of the stage (fields to be added)."""
