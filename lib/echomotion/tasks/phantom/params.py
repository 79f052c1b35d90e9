"""Params section ``phantom``: the phantom generator's own params model."""

from echomotion.phantom.params import PhantomParams

__all__ = ["PhantomParams"]
