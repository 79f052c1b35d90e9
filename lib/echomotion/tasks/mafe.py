"""Stages of the mafe group (being written)."""

from ..section import Section


class MAFETrainParams(Section):
    """Params of the stage (fields to be added)."""


class FeaturesParams(Section):
    """Params of the stage (fields to be added)."""
