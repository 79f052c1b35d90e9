"""Calling a wrapped model's other methods so that data-parallel training still works.

DistributedDataParallel averages gradients only for computations that went through its
``forward`` (``DDP.forward`` arms the gradient hooks of the backward pass). A loss that
needs more than ``forward`` (a VAE's ``encode`` then ``decode``, keeping the posterior)
must not call ``model.module.encode`` directly: with several processes each rank would
step with its own gradients and the replicas would drift apart. :func:`through_forward`
runs such a computation *inside* the wrapper's forward, the way Lightning Fabric
redirects method calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

T = TypeVar("T")

WRAPPERS = (DistributedDataParallel, DataParallel)


def inner_module(model: nn.Module) -> nn.Module:
    """The module a data-parallel wrapper holds, or ``model`` itself."""
    while isinstance(model, WRAPPERS):
        model = model.module
    return model


def through_forward(model: nn.Module, fn: Callable[[nn.Module], T]) -> T:
    """``fn(inner)`` computed inside ``model``'s forward, ``inner`` being the module it wraps.

    Without a wrapper (one process) this is just ``fn(model)``. With one, the inner
    module's ``forward`` is replaced for the duration of a single ``model()`` call, so
    the wrapper prepares gradient synchronisation for what ``fn`` computes. Whatever
    ``forward`` the inner module had (e.g. accelerate's autocast wrapper) is put back.
    """
    inner = inner_module(model)
    if inner is model:
        return fn(model)
    had_own = "forward" in inner.__dict__
    saved = inner.__dict__.get("forward")
    inner.forward = lambda: fn(inner)
    try:
        return model()
    finally:
        if had_own:
            inner.forward = saved
        else:
            del inner.forward
