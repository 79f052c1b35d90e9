"""Feature extractors for the Frechet distances: one interface, several networks.

An extractor maps a float batch in [0, 1] to (N, D) features: frames (N, 1, H, W) when
``kind == "frame"`` (FID-style), clips (N, T, 1, H, W) when ``kind == "clip"`` (FVD-style).
Its network is moved to the ``device`` it is built with, and it moves each batch there.
The defaults are networks trained in this pipeline (the ReID encoder for frames, the EF
regressor's penultimate layer for clips). The protocol's own networks (Inception-v3 for FID,
I3D for FVD, as in StyleGAN-V) can be used from a local TorchScript file: nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from ..data import to_tensor
from .params import TorchScriptExtractorParams

Kind = Literal["frame", "clip"]


class FeatureExtractor(Protocol):
    """``extractor(batch) -> (N, D)`` features on ``device`` (where its network runs);
    ``kind`` says what a batch holds."""

    kind: Kind
    device: torch.device

    def __call__(self, batch: Tensor) -> Tensor: ...


class ReIDFrameFeatures:
    """Frames -> L2-normalised ReID embeddings (the default frame extractor)."""

    kind: Kind = "frame"

    def __init__(self, encoder: nn.Module, device: str | torch.device):
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, batch: Tensor) -> Tensor:
        return self.encoder.embed(batch.to(self.device))


class EFClipFeatures:
    """Clips -> penultimate features of the EF regressor (the default clip extractor)."""

    kind: Kind = "clip"

    def __init__(self, regressor: nn.Module, device: str | torch.device):
        self.device = torch.device(device)
        self.regressor = regressor.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, batch: Tensor) -> Tensor:
        return self.regressor(batch.to(self.device))["features"]


_SCALE = {"unit": (1.0, 0.0), "byte": (255.0, 0.0), "symmetric": (2.0, -1.0)}


class TorchScriptFeatures:
    """A TorchScript network as an extractor. Frames go in as (N, C, size, size); clips as
    (N, C, T, size, size), the I3D layout."""

    def __init__(self, params: TorchScriptExtractorParams, kind: Kind, device: str | torch.device):
        if not Path(params.path).is_file():
            raise FileNotFoundError(f"{params.path}: feature network not found")
        self.params, self.kind, self.device = params, kind, torch.device(device)
        self.module = torch.jit.load(params.path, map_location=self.device).eval()

    def preprocess(self, batch: Tensor) -> Tensor:
        """Resize, repeat channels and rescale a [0, 1] batch for the network."""
        p = self.params
        frames = batch if self.kind == "frame" else rearrange(batch, "n t c h w -> (n t) c h w")
        frames = F.interpolate(frames, size=(p.size, p.size), mode="bilinear", antialias=True)
        frames = repeat(frames, "b 1 h w -> b c h w", c=p.channels)  # (B, C, size, size)
        scale, shift = _SCALE[p.value_range]
        frames = frames * scale + shift
        if self.kind == "frame":
            return frames
        return rearrange(frames, "(n t) c h w -> n c t h w", n=len(batch))

    @torch.no_grad()
    def __call__(self, batch: Tensor) -> Tensor:
        out = self.module(self.preprocess(batch.to(self.device)), **self.params.call_kwargs)
        return out.reshape(len(batch), -1).float()


def batches(items: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of ``batch_size`` items."""
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def extract(extractor: FeatureExtractor, items: np.ndarray, batch_size: int) -> np.ndarray:
    """Features (N, D) float64 of uint8 frames (N, H, W) or clips (N, T, H, W), computed on
    the extractor's device and brought back to the host."""
    expected = 3 if extractor.kind == "frame" else 4
    if items.ndim != expected:
        raise ValueError(
            f"a {extractor.kind} extractor needs {expected}-d uint8 items, got shape {items.shape}"
        )
    feats = [extractor(to_tensor(b)).cpu().double().numpy() for b in batches(items, batch_size)]
    return np.concatenate(feats)
