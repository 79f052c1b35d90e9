"""Image reconstruction metrics: PSNR and SSIM, per image, differentiable (torch)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from echomotion.diffusion.vae import decode_latents, encode_frames


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"pred and target must share one (B, C, H, W) shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image ``(B, C, H, W)`` -> ``(B,)``.

    Identical images give ``inf``.
    """
    _check_pair(pred, target)
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size)  # (C, 1, k, k)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, Gaussian window, valid region) -> ``(B,)``."""
    _check_pair(pred, target)
    if min(pred.shape[-2:]) < window_size:
        raise ValueError(f"images {tuple(pred.shape[-2:])} are smaller than window {window_size}")
    channels = pred.shape[1]
    window = _gaussian_window(window_size, sigma, channels, pred.device)
    x, y = pred.float(), target.float()

    def blur(img: torch.Tensor) -> torch.Tensor:
        return F.conv2d(img, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return index.flatten(1).mean(1)  # (B,)


def reconstruction_metrics(
    vae: AutoencoderKL, frames: np.ndarray, batch_size: int = 64
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of uint8 frames ``(N, H, W)`` after a VAE encode/decode round trip.

    Frames go through the stored-latent path (float16 latents), as downstream stages see them.
    """
    recon = decode_latents(vae, encode_frames(vae, frames, batch_size), batch_size)
    pred = torch.from_numpy(recon).unsqueeze(1).float() / 255.0  # (N, 1, H, W)
    target = torch.from_numpy(np.asarray(frames)).unsqueeze(1).float() / 255.0
    return {
        "psnr": psnr(pred, target).clamp(max=100.0).mean().item(),
        "ssim": ssim(pred, target).mean().item(),
    }
