"""Params section ``flow_export``."""

from __future__ import annotations

from echomotion.flow.params import FlowProviderParams
from echomotion.section import Section


class FlowExportParams(Section):
    """Which flow the pseudo labels come from; the metrics compare all providers."""

    provider: FlowProviderParams
