"""EF from LV-area tracking: a tiny U-Net segments the LV, EF follows from the area curve.

The segmenter is trained from scratch on the traced (ED and ES) frames of real TRAIN videos
(:mod:`.tracings` rasterises them); applied to every frame it gives the LV area over time.
A volume grows like area^1.5 when the LV scales alike in every direction, so
``EF_raw = 1 - (A_min / A_max)^power`` (power 1.5), and a linear calibration
``EF = a + b EF_raw`` fitted on TRAIN videos against their FileList EF absorbs the rest
(the LV shortens less than it narrows, and the mask's edge). It scores EF consistency of
synthetic videos with a network whose accuracy is measured on real videos first; it never
trains the generator.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn
from torch.utils.data import Dataset

from echomotion.data import to_tensor
from echomotion.evaluation.extractors import batches
from echomotion.evaluation.params import LVSegmenterParams


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, each GroupNorm-ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(min(4, c_out), c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.GroupNorm(min(4, c_out), c_out),
        nn.ReLU(),
    )


class LVSegmenter(ModelMixin, ConfigMixin):
    """Frames (B, 1, H, W) in [0, 1] -> LV logits (B, 1, H, W); any frame size.

    Args:
        widths: channels per level; each level after the first halves the frame side.
        input_size: side frames are resized to inside the model (None: as given); the
            logits are resized back.
    """

    @register_to_config
    def __init__(self, widths: tuple[int, ...] = (8, 16, 32), input_size: int | None = None):
        super().__init__()
        chans = (1, *widths)
        self.down = nn.ModuleList([_conv_block(chans[i], chans[i + 1]) for i in range(len(widths))])
        self.up = nn.ModuleList(
            [_conv_block(widths[i] + widths[i + 1], widths[i]) for i in range(len(widths) - 1)]
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    @classmethod
    def from_params(cls, params: LVSegmenterParams) -> LVSegmenter:
        """An untrained segmenter of the given architecture."""
        return cls(**params.model_dump())

    def forward(self, frames: Tensor) -> Tensor:
        if frames.ndim != 4 or frames.shape[1] != 1:
            raise ValueError(f"expected (B, 1, H, W) frames, got {tuple(frames.shape)}")
        # 1. resize to the working size
        size, x = frames.shape[-2:], frames
        if self.config.input_size is not None:
            side = self.config.input_size
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
        # 2. encoder: a block per level, max-pooled between levels
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        # 3. decoder: upsample to the skip's size, concatenate, block
        for block, skip in zip(reversed(self.up), reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
        logits = self.head(x)  # (B, 1, h, w)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def lv_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Binary cross-entropy plus soft Dice loss; logs the hard Dice of the batch."""
    logits, target = model(batch["frames"]), batch["mask"].float()
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    soft_dice = (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    loss = F.binary_cross_entropy_with_logits(logits, target) + (1 - soft_dice).mean()
    return loss, {"dice": float(dice(logits.detach() > 0, target > 0).mean())}


def dice(pred: Tensor | np.ndarray, truth: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Dice of boolean masks (B, ..., H, W) per item (B,) (1 where both are empty)."""
    axes = tuple(range(1, pred.ndim))
    inter = (pred & truth).sum(axes)
    total = pred.sum(axes) + truth.sum(axes)
    if isinstance(total, Tensor):
        return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)


class TracedFrameDataset(Dataset):
    """Traced frames (N, H, W) uint8 and their LV masks (N, H, W) bool.

    Item: ``frames`` (1, H, W) float in [0, 1] and ``mask`` (1, H, W). With ``augment``,
    a shift of up to ``max_shift`` pixels (frame and mask alike), a Gaussian blur (generated
    frames are smoother than real ones) and a gamma / gain change, each a pure function
    of (seed, epoch, index).
    """

    def __init__(
        self, frames: np.ndarray, masks: np.ndarray, seed: int = 0, augment=True, max_shift=4
    ):
        if frames.shape != masks.shape or frames.ndim != 3 or len(frames) == 0:
            raise ValueError(f"need (N, H, W) frames and masks: {frames.shape} vs {masks.shape}")
        self.frames, self.masks = frames, masks.astype(bool)
        self.seed, self.epoch, self.augment, self.max_shift = seed, 0, augment, max_shift

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        frame, mask = self.frames[index], self.masks[index]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            frame, mask = self._augment(frame, mask, rng)
        return {"frames": to_tensor(frame), "mask": torch.from_numpy(mask[None].copy())}

    def _augment(self, frame: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        dy, dx = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
        frame, mask = _shift(frame, dy, dx), _shift(mask, dy, dx)
        sigma = rng.uniform(0.0, 1.5)
        x = frame.astype(np.float32) / 255.0
        if sigma > 0.3:
            x = cv2.GaussianBlur(x, (0, 0), sigma)
        x = rng.uniform(0.8, 1.2) * x ** rng.uniform(0.7, 1.4)
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8), mask


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved by (dy, dx) pixels, zero-filled."""
    out = np.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


@torch.no_grad()
def predict_masks(
    model: LVSegmenter, frames: np.ndarray, batch_size: int, *, device: str | torch.device
) -> np.ndarray:
    """LV probabilities (T, H, W) float32 of uint8 frames (T, H, W), the segmenter moved to
    and run on ``device``."""
    model.to(device).eval()
    out = [
        torch.sigmoid(model(to_tensor(b).to(device)))[:, 0].cpu().numpy()
        for b in batches(frames, batch_size)
    ]
    return np.concatenate(out)


AREA_MODES = ("largest", "soft")  # evaluate.lv.area


def largest_region_area(probabilities: np.ndarray) -> float:
    """Pixels of the largest 8-connected region of ``probabilities`` ``(H, W)`` above 0.5;
    0 when there is none."""
    mask = (probabilities > 0.5).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return float(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0.0


def areas_of(probabilities: np.ndarray, mode: str = "largest") -> np.ndarray:
    """LV area (T,) in pixels of LV probabilities ``(T, H, W)``.

    ``largest``: the pixel count of the largest connected region above 0.5, so a stray
    region (the left atrium of a frame near ES, speckle beside the wall) is not counted,
    nor the low probabilities spread over the rest of the frame. ``soft``: the sum of all
    probabilities (the former measure; on the 8 phantom VAL videos it read one EF-57 heart
    as 33, README "Generator")."""
    if mode == "largest":
        return np.array([largest_region_area(p) for p in probabilities], np.float64)
    if mode == "soft":
        return probabilities.sum(axis=(1, 2)).astype(np.float64)
    raise ValueError(f"LV area mode must be one of {AREA_MODES}, got {mode!r}")


def lv_areas(
    model: LVSegmenter,
    frames: np.ndarray,
    batch_size: int,
    *,
    device: str | torch.device,
    mode: str = "largest",
) -> np.ndarray:
    """LV area (T,) in pixels of each frame (:func:`areas_of` ``mode``), segmented on
    ``device``."""
    return areas_of(predict_masks(model, frames, batch_size, device=device), mode)


def raw_ef(areas: np.ndarray, power: float = 1.5) -> float:
    """``100 (1 - (A_min / A_max)^power)`` of an area curve (T,); NaN when it is empty or 0.

    Plain extremes, not smoothed ones: a smoothing window would flatten a sharp ES more at
    a low frame rate (generated videos) than at a high one (real videos)."""
    a = np.asarray(areas, dtype=np.float64)
    if len(a) == 0 or a.max() <= 0:
        return float("nan")
    return float(100.0 * (1.0 - (max(a.min(), 0.0) / a.max()) ** power))


def ef_from_areas(areas: np.ndarray, a: float, b: float, power: float = 1.5) -> float:
    """The estimator's EF of an area curve (T,): ``a + b raw_ef(areas, power)``, with the
    calibration ``(a, b)`` of :func:`fit_calibration`."""
    return a + b * raw_ef(areas, power)


def fit_calibration(raw: np.ndarray, ef: np.ndarray) -> tuple[float, float]:
    """Least-squares (a, b) of ``ef ~ a + b raw`` over the finite pairs; (mean EF, 0) when
    the raw values do not vary."""
    raw, ef = np.asarray(raw, float), np.asarray(ef, float)
    ok = np.isfinite(raw) & np.isfinite(ef)
    raw, ef = raw[ok], ef[ok]
    if len(ef) == 0:
        raise ValueError("no finite (raw EF, EF) pair to calibrate on")
    if len(ef) < 2 or np.ptp(raw) == 0:
        return float(ef.mean()), 0.0
    b, a = np.polyfit(raw, ef, 1)
    return float(a), float(b)
