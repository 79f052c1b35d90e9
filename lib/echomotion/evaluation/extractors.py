"""Feature extractors for the Frechet distances: one interface, several networks.

An extractor maps a float batch in [0, 1] to (N, D) features: frames (N, 1, H, W) when
``kind == "frame"`` (FID-style), clips (N, T, 1, H, W) when ``kind == "clip"`` (FVD-style).
Its network is moved to the ``device`` it is built with, and it moves each batch there.
The defaults are networks trained in this pipeline (the ReID encoder for frames, the EF
regressor's penultimate layer for clips). The protocol's own networks (Inception-v3 for FID
and IS, I3D for FVD, as in StyleGAN-V) are TorchScript files, local or downloaded once into
a cache (:mod:`.detectors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from echomotion.data import to_tensor
from echomotion.evaluation.detectors import load_detector
from echomotion.evaluation.params import TorchScriptExtractorParams

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


_SCALE = {"unit": (1.0, 0.0), "byte": (255.0, 0.0), "symmetric": (2.0, -1.0), "uint8": (255.0, 0.0)}


class TorchScriptFeatures:
    """A TorchScript network as an extractor. Frames go in as (N, C, size, size); clips as
    (N, C, T, size, size), the I3D layout (at their own size when ``size`` is None)."""

    def __init__(self, params: TorchScriptExtractorParams, kind: Kind, device: str | torch.device):
        self.params, self.kind, self.device = params, kind, torch.device(device)
        self.module = load_detector(params, self.device)

    def preprocess(self, batch: Tensor) -> Tensor:
        """Resize, repeat channels and rescale a [0, 1] batch for the network ("uint8":
        rounded to a uint8 tensor, as StyleGAN-V feeds its detectors)."""
        p = self.params
        frames = batch if self.kind == "frame" else rearrange(batch, "n t c h w -> (n t) c h w")
        if p.size is not None:
            frames = F.interpolate(frames, size=(p.size, p.size), mode="bilinear", antialias=True)
        frames = repeat(frames, "b 1 h w -> b c h w", c=p.channels)  # (B, C, size, size)
        scale, shift = _SCALE[p.value_range]
        frames = frames * scale + shift
        if p.value_range == "uint8":
            frames = frames.round().clamp(0, 255).to(torch.uint8)
        if self.kind == "frame":
            return frames
        return rearrange(frames, "(n t) c h w -> n c t h w", n=len(batch))

    @torch.no_grad()
    def __call__(self, batch: Tensor) -> Tensor:
        out = self.module(self.preprocess(batch.to(self.device)), **self.params.call_kwargs)
        return out.reshape(len(batch), -1).float()

    @torch.no_grad()
    def probabilities(self, batch: Tensor) -> Tensor:
        """Class probabilities (N, K) of a frame batch (the Inception Score's input): the
        network's output called with ``probs_kwargs`` (StyleGAN-V's Inception returns
        softmax probabilities), or its softmax when that output is not a distribution."""
        out = self.module(self.preprocess(batch.to(self.device)), **self.params.probs_kwargs)
        out = out.reshape(len(batch), -1).double()
        if bool((out < 0).any()) or not torch.allclose(out.sum(1), out.new_ones(1), atol=1e-3):
            out = out.softmax(dim=1)  # logits
        return out


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


def extract_probabilities(
    extractor: TorchScriptFeatures, frames: np.ndarray, batch_size: int
) -> np.ndarray:
    """Class probabilities (N, K) float64 of uint8 frames (N, H, W) (Inception Score)."""
    if extractor.kind != "frame" or frames.ndim != 3:
        raise ValueError(
            f"class probabilities need a frame extractor and (N, H, W) frames, got "
            f"a {extractor.kind} extractor and shape {frames.shape}"
        )
    probs = [
        extractor.probabilities(to_tensor(b)).cpu().numpy() for b in batches(frames, batch_size)
    ]
    return np.concatenate(probs)
