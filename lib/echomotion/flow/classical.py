"""Flow providers: OpenCV DIS and Farneback, and the learned network, behind one interface.

Every provider maps uint8 frame batches ``frames_a``, ``frames_b`` (B, H, W) to float32 flows
(B, 2, H, W) in the project convention ``I_a(x) ~= I_b(x + flow_ab(x))``. OpenCV's
``calcOpticalFlow*(prev=a, next=b)`` gives ``prev(y, x) ~ next(y + fy, x + fx)``, which is the
same convention, so its (H, W, 2) output only needs moving the channel axis first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, Protocol

import cv2
import numpy as np
import torch
from torch import nn

from echomotion.flow.params import FlowProviderParams

DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class FlowProvider(Protocol):
    """``provider(frames_a, frames_b)``: uint8 (B, H, W) pairs -> float32 flow_ab (B, 2, H, W)."""

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray: ...


def check_frames(frames_a: np.ndarray, frames_b: np.ndarray) -> None:
    """Both (B, H, W) uint8 with equal shapes."""
    a, b = np.asarray(frames_a), np.asarray(frames_b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"frames_a {a.shape} and frames_b {b.shape}: need equal (B, H, W)")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {a.dtype} and {b.dtype}")


def frames_to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W) -> float32 (B, 1, H, W) in [0, 1] on ``device``."""
    # np.array copies to fresh positive strides: ascontiguousarray may keep a negative stride
    # on a length-1 axis, which torch.from_numpy rejects
    return torch.from_numpy(np.array(frames, dtype=np.float32)).to(device).div(255.0)[:, None]


class _OpenCVFlow(ABC):
    """Shared batching of the per-pair OpenCV methods."""

    @abstractmethod
    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """OpenCV flow (H, W, 2) of one uint8 pair."""

    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        """Flow_ab (B, 2, H, W) float32, one OpenCV call per pair."""
        check_frames(frames_a, frames_b)
        pairs = zip(np.ascontiguousarray(frames_a), np.ascontiguousarray(frames_b), strict=True)
        flows = [self._pair(a, b) for a, b in pairs]  # each (H, W, 2)
        return np.stack(flows).transpose(0, 3, 1, 2).astype(np.float32)  # (B, 2, H, W)


class DISFlow(_OpenCVFlow):
    """OpenCV Dense Inverse Search flow (Kroeger et al. 2016) at a speed/accuracy preset."""

    def __init__(self, preset: Literal["ultrafast", "fast", "medium"] = "medium"):
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose from {sorted(DIS_PRESETS)}")
        self.dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.dis.calc(a, b, None)


class FarnebackFlow(_OpenCVFlow):
    """OpenCV Farneback polynomial-expansion flow."""

    def __init__(self, levels: int = 3, winsize: int = 15, iterations: int = 3):
        self.args = {
            "pyr_scale": 0.5,
            "levels": levels,
            "winsize": winsize,
            "iterations": iterations,
            "poly_n": 5,
            "poly_sigma": 1.1,
            "flags": 0,
        }

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(a, b, None, **self.args)


class NetworkFlow:
    """A trained flow network (e.g. :class:`PWCLite`) as a :class:`FlowProvider`."""

    def __init__(self, model: nn.Module, batch_size: int = 64):
        self.model = model.eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        """Flow_ab (B, 2, H, W) float32 from uint8 frames, in chunks of ``batch_size`` pairs."""
        check_frames(frames_a, frames_b)
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(frames_a), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            a, b = (frames_to_tensor(f[chunk], device) for f in (frames_a, frames_b))
            out.append(self.model(a, b).flow.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def make_flow_provider(params: FlowProviderParams, model: nn.Module | None = None) -> FlowProvider:
    """The provider ``params.method`` names; "network" needs the trained ``model``."""
    if params.method == "dis":
        return DISFlow(params.dis_preset)
    if params.method == "farneback":
        return FarnebackFlow()
    if model is None:
        raise ValueError("flow method 'network' needs a trained model (got model=None)")
    return NetworkFlow(model, params.batch_size)
