"""Stages of the flow group (being written)."""

from ..section import Section


class FlowTrainParams(Section):
    """Params of the stage (fields to be added)."""


class FlowExportParams(Section):
    """Params of the stage (fields to be added)."""
