"""Exponential moving average of a model's weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


class EMA:
    """fp32 shadow copy of the floating-point parameters of ``model``.

    After optimizer step ``t`` (1-based) the shadow moves towards the weights with decay
    ``min(decay, (1 + t) / (10 + t))``, the warm-up rule of diffusers' ``EMAModel``, so
    early shadows are not dominated by the random initialisation. The decay depends only
    on ``t``, so a resumed run needs nothing but the shadow weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {
            name: p.detach().float().clone()
            for name, p in model.named_parameters()
            if p.is_floating_point()
        }

    def decay_at(self, step: int) -> float:
        """Decay applied by the update after optimizer step ``step``."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the shadow towards the current weights of ``model``."""
        weight = 1.0 - self.decay_at(step)
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), weight)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the parameters of ``model`` with the shadow."""
        for name, p in model.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name])

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily give ``model`` the shadow weights; restore the raw ones after."""
        raw = {n: p.detach().clone() for n, p in model.named_parameters() if n in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in raw:
                        p.copy_(raw[name])

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow weights, keyed like the model's parameters."""
        return {name: t.contiguous() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore shadow weights saved by :meth:`state_dict` (same keys required)."""
        if state.keys() != self.shadow.keys():
            missing, extra = self.shadow.keys() - state.keys(), state.keys() - self.shadow.keys()
            raise KeyError(f"EMA keys differ: missing {sorted(missing)}, extra {sorted(extra)}")
        for name, tensor in state.items():
            self.shadow[name].copy_(tensor)
