"""A tiny in-memory frame dataset for ReID (identity = video), with light augmentation.

The stage's real dataset over the video store is written elsewhere; this one serves
tests, small experiments and any caller that already holds frames in memory.
Augmentation is deliberately mild and never flips: the apical four-chamber view has a
fixed orientation, so a mirrored heart is not the same "identity" seen differently.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


class FrameIdentityDataset(Dataset):
    """Items ``{"image": (1, H, W) float in [0, 1], "identity": () long}``.

    Args:
        frames: (N, H, W) uint8 frames.
        identities: (N,) integer identity of each frame (e.g. its video's index).
        augment: apply a random shift and brightness/contrast jitter.
        max_shift: largest shift in pixels along each axis (reflect-padded crop).
        brightness: additive offset drawn from U(-brightness, brightness).
        contrast: gain around the frame mean drawn from U(1 - contrast, 1 + contrast).

    Randomness uses torch's global generator (seeded per worker by the DataLoader).
    """

    def __init__(
        self,
        frames: np.ndarray,
        identities: np.ndarray,
        augment: bool = False,
        max_shift: int = 4,
        brightness: float = 0.1,
        contrast: float = 0.2,
    ) -> None:
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W) uint8, got {frames.shape} {frames.dtype}")
        if len(identities) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(identities)} identities")
        self.frames = frames
        self.identities = np.asarray(identities, dtype=np.int64)
        self.augment, self.max_shift = augment, max_shift
        self.brightness, self.contrast = brightness, contrast

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = torch.from_numpy(self.frames[index]).float().div(255.0)[None]  # (1, H, W)
        if self.augment:
            image = self._jitter(self._shift(image))
        return {"image": image, "identity": torch.tensor(self.identities[index])}

    def _shift(self, image: Tensor) -> Tensor:
        """Random translation by up to ``max_shift`` pixels (reflect padding, then crop)."""
        s = self.max_shift
        if s == 0:
            return image
        _, h, w = image.shape
        padded = F.pad(image[None], (s, s, s, s), mode="reflect")[0]  # (1, H + 2s, W + 2s)
        dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return padded[:, dy : dy + h, dx : dx + w]

    def _jitter(self, image: Tensor) -> Tensor:
        """Random contrast around the mean, then a random brightness offset; clipped."""
        gain = 1.0 + (torch.rand(()) * 2 - 1) * self.contrast
        offset = (torch.rand(()) * 2 - 1) * self.brightness
        mean = image.mean()
        return ((image - mean) * gain + mean + offset).clamp(0.0, 1.0)
