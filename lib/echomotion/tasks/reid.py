"""Stages of the reid group (being written)."""

from ..section import Section


class ReIDTrainParams(Section):
    """Params of the stage (fields to be added)."""


class ReIDExportParams(Section):
    """Params of the stage (fields to be added)."""
