"""Ejection-fraction regressor: a small (2+1)D CNN over fixed-length clips.

It serves three evaluations: EF consistency of synthetic videos (EF predicted on a
synthetic video against the EF of its motion source), the EchoNet-Synthetic downstream
protocol (one regressor trained on real videos, one on synthetic only, both tested on
real TEST), and FVD-style realism (its penultimate features are the clip extractor).
It trains with the project's one loop (:func:`echomotion.training.train`) through
:func:`ef_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from sklearn.metrics import mean_absolute_error, root_mean_squared_error
from torch import Tensor, nn
from torch.utils.data import Dataset

from echomotion.data import VideoWindowDataset, to_tensor
from echomotion.evaluation.extractors import batches
from echomotion.evaluation.params import EFRegressorParams
from echomotion.evaluation.probes import r_squared
from echomotion.evaluation.videos import VideoSet, clip_frame_indices, gather_clips, spaced_clips


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(4, channels), channels)


class R2Plus1DBlock(nn.Module):
    """A 1x3x3 spatial conv (stride 2 in space) then a 3x1x1 temporal conv, each GN-ReLU."""

    def __init__(self, c_in: int, c_out: int, temporal_stride: int):
        super().__init__()
        self.spatial = nn.Conv3d(c_in, c_out, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(
            c_out, c_out, (3, 1, 1), stride=(temporal_stride, 1, 1), padding=(1, 0, 0)
        )
        self.norm1, self.norm2 = _norm(c_out), _norm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.spatial(x)))
        return F.relu(self.norm2(self.temporal(x)))


class EFRegressor(ModelMixin, ConfigMixin):
    """Clips (B, T, 1, H, W) in [0, 1] -> EF (%) and penultimate features; any T and size.

    Args:
        in_channels: channels of the frames (1: grayscale).
        widths: channels of each (2+1)D block; every block halves the frame side, blocks
            after the first also halve the time axis.
        feature_dim: width of the penultimate layer.
        input_size: side the frames are resized to before the first block.
        ef_mean, ef_std: EF (%) = ef_mean + ef_std * (network output).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, ...] = (8, 16, 32),
        feature_dim: int = 64,
        input_size: int = 48,
        ef_mean: float = 55.0,
        ef_std: float = 12.0,
    ) -> None:
        super().__init__()
        chans = (in_channels, *widths)
        self.blocks = nn.Sequential(
            *[R2Plus1DBlock(chans[i], chans[i + 1], 1 if i == 0 else 2) for i in range(len(widths))]
        )
        self.features = nn.Sequential(nn.Linear(widths[-1], feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, 1)

    @classmethod
    def from_params(cls, params: EFRegressorParams) -> EFRegressor:
        """An untrained regressor of the given architecture."""
        return cls(**params.model_dump())

    def check_inputs(self, clips: Tensor) -> None:
        """Raise unless ``clips`` is a float (B, T, in_channels, H, W) batch."""
        c = self.config.in_channels
        if clips.ndim != 5 or clips.shape[2] != c or not clips.is_floating_point():
            raise ValueError(
                f"expected float (B, T, {c}, H, W) clips, got {tuple(clips.shape)} {clips.dtype}"
            )

    def forward(self, clips: Tensor) -> dict[str, Tensor]:
        """Return ``ef`` (B,) in percent and ``features`` (B, feature_dim)."""
        # 1. check, resize frames
        self.check_inputs(clips)
        b, size = clips.shape[0], self.config.input_size
        frames = rearrange(clips, "b t c h w -> (b t) c h w")
        frames = F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True)
        x = rearrange(frames, "(b t) c h w -> b c t h w", b=b)  # (B, C, T, s, s)
        # 2. (2+1)D blocks, global average pool
        pooled = self.blocks(x).mean(dim=(2, 3, 4))  # (B, widths[-1])
        # 3. penultimate features and EF
        features = self.features(pooled)  # (B, feature_dim)
        ef = self.config.ef_mean + self.config.ef_std * self.head(features).squeeze(1)
        return {"ef": ef, "features": features}


def ef_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """MSE in units of ``ef_std`` between predicted and labelled EF; logs the MAE (%)."""
    ef = model(batch["frames"])["ef"]
    std = _unwrap(model).config.ef_std
    loss = F.mse_loss(ef / std, batch["ef"].float() / std)
    return loss, {"mae": float((ef.detach() - batch["ef"]).abs().mean())}


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper."""
    return getattr(model, "module", model)


class LabelledWindowDataset(VideoWindowDataset):
    """Random clips of videos of the prepared store whose EF is known."""

    def __init__(self, store_path: str | Path, length: int, splits=("TRAIN",), seed: int = 0):
        super().__init__(store_path, length, splits, seed)
        self.videos = self.videos[np.isfinite(self.table["ef"][self.videos].astype(float))]
        if len(self.videos) == 0:
            raise ValueError(f"{store_path}: no video of {splits} has an EF label")


class ArrayClipDataset(Dataset):
    """Random clips of in-memory videos with EF labels (e.g. the synthetic set).

    Item: ``frames`` (length, 1, H, W) float in [0, 1] and ``ef``. The clip start is a pure
    function of (seed, epoch, index); videos shorter than ``length`` are stretched.
    """

    def __init__(self, videos: Sequence[np.ndarray], ef: Sequence[float], length: int, seed=0):
        if len(videos) != len(ef) or not videos:
            raise ValueError(f"need as many videos as labels, >= 1: {len(videos)} vs {len(ef)}")
        self.videos, self.ef, self.length = list(videos), np.asarray(ef, float), length
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        video = self.videos[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        start = int(rng.integers(0, max(len(video) - self.length, 0) + 1))
        clip = video[clip_frame_indices(len(video), start, self.length)]
        return {"frames": to_tensor(clip), "ef": torch.tensor(self.ef[index])}


@torch.no_grad()
def predict_ef(
    model: EFRegressor,
    videos: VideoSet,
    length: int,
    clips_per_video: int,
    batch_size: int,
    *,
    device: str | torch.device,
) -> np.ndarray:
    """EF (%) per video (N,): the mean over ``clips_per_video`` evenly spaced clips, the
    regressor moved to and run on ``device``."""
    model.to(device).eval()
    rows = spaced_clips(videos, clips_per_video, length)  # (N * k, 2)
    clips = gather_clips(videos, rows, length)  # (N * k, length, H, W)
    preds = np.concatenate(
        [model(to_tensor(b).to(device))["ef"].cpu().numpy() for b in batches(clips, batch_size)]
    )
    return preds.reshape(len(videos), clips_per_video).mean(axis=1)


def bootstrap_intervals(
    truth: np.ndarray,
    pred: np.ndarray,
    resamples: int,
    rng: np.random.Generator,
    level: float = 0.95,
    groups: Sequence | None = None,
) -> dict[str, float]:
    """Percentile intervals of MAE and R-squared over ``resamples`` draws of the (truth,
    pred) pairs with replacement: ``mae_ci_low``, ``mae_ci_high``, ``r2_ci_low``,
    ``r2_ci_high`` (NaN with fewer than 2 pairs or no resamples). Draws whose truths are all
    equal have no R-squared and are left out of its interval. With ``groups`` (one label
    per pair, e.g. the driver of each generated video) whole groups are drawn, so pairs
    that share a driver, and its error, are not counted as independent.

    With a handful of videos (8 TEST drivers at the CPU default) an R-squared moves by
    tenths from one draw of videos to the next; these intervals say by how much.
    """
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    keys = ("mae_ci_low", "mae_ci_high", "r2_ci_low", "r2_ci_high")
    labels = np.arange(len(truth)) if groups is None else np.asarray(groups)
    members = [np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())]
    if len(members) < 2 or resamples < 1:
        return dict.fromkeys(keys, float("nan"))
    mae, r2 = np.empty(resamples), np.full(resamples, np.nan)
    for k, drawn in enumerate(rng.integers(0, len(members), (resamples, len(members)))):
        rows = np.concatenate([members[g] for g in drawn])
        t, p = truth[rows], pred[rows]
        mae[k] = np.abs(t - p).mean()
        ss_tot = np.square(t - t.mean()).sum()
        if ss_tot > 0:
            r2[k] = 1.0 - np.square(t - p).sum() / ss_tot
    r2 = r2[np.isfinite(r2)]
    q = (50 * (1 - level), 50 * (1 + level))
    mae_low, mae_high = np.percentile(mae, q)
    r2_low, r2_high = np.percentile(r2, q) if len(r2) else (float("nan"),) * 2
    return dict(zip(keys, map(float, (mae_low, mae_high, r2_low, r2_high)), strict=True))


def regression_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R-squared (1 - SS_res / SS_tot; NaN for < 2 or constant truths), ``bias``
    (mean of pred - truth) and Pearson's ``r`` (NaN for < 2 pairs or a constant side).

    R-squared punishes a constant offset as much as scatter; ``r`` does not, so the two
    tell a prediction that ranks right but sits off (a generator whose hearts all move too
    little) from one that does not rank at all.
    """
    truth, pred = np.asarray(truth, float), np.asarray(pred, float)
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and pred {pred.shape} differ")
    nan = float("nan")
    if len(truth) == 0:
        return {"mae": nan, "rmse": nan, "r2": nan, "n": 0, "bias": nan, "r": nan}
    mae = float(mean_absolute_error(truth, pred))
    rmse = float(root_mean_squared_error(truth, pred))
    varies = len(truth) > 1 and truth.std() > 0 and pred.std() > 0
    r = float(np.corrcoef(truth, pred)[0, 1]) if varies else nan
    bias = float((pred - truth).mean())
    return {"mae": mae, "rmse": rmse, "r2": r_squared(truth, pred), "n": len(truth),
            "bias": bias, "r": r}  # fmt: skip
