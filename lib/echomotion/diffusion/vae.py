"""The grayscale latent autoencoder: a diffusers ``AutoencoderKL`` with 1 channel in and out.

L resolution levels (L - 1 downsamplings) give a ``2 ** (L - 1)`` times smaller latent:
with 3 levels a 112x112 frame becomes a C x 28 x 28 latent (4 levels: 14 x 14). Images
enter the VAE as float ``(N, 1, H, W)`` in [-1, 1]; frames on disk are uint8 ``(N, H, W)``.
Stored latents are the posterior mode times ``vae.config.scaling_factor`` (deterministic),
in float16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate.utils import extract_model_from_parallel
from diffusers import AutoencoderKL

from echomotion.diffusion.params import VAEModelParams


def load_vae(vae_dir: str | Path) -> AutoencoderKL:
    """The trained VAE in eval mode; FileNotFoundError naming the folder when missing."""
    if not (Path(vae_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{vae_dir}: no saved VAE (config.json); run vae_train first")
    return AutoencoderKL.from_pretrained(vae_dir).eval()


def build_vae(params: VAEModelParams) -> AutoencoderKL:
    """A freshly initialised grayscale ``AutoencoderKL`` (scaling factor 1 until estimated)."""
    levels = len(params.block_out_channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=params.block_out_channels,
        layers_per_block=params.layers_per_block,
        latent_channels=params.latent_channels,
        norm_num_groups=params.norm_num_groups,
        scaling_factor=1.0,
        force_upcast=False,
    )


def downsampling(vae: AutoencoderKL) -> int:
    """Frame side / latent side of ``vae`` (possibly wrapped)."""
    return 2 ** (len(extract_model_from_parallel(vae).config.block_out_channels) - 1)


def frames_to_images(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames ``(N, H, W)`` -> float32 VAE input ``(N, 1, H, W)`` in [-1, 1]."""
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    return frames.unsqueeze(1).float() / 127.5 - 1.0  # (N, 1, H, W)


def images_to_frames(images: torch.Tensor) -> np.ndarray:
    """VAE output ``(N, 1, H, W)`` in [-1, 1] -> uint8 frames ``(N, H, W)`` (clipped, rounded)."""
    scaled = ((images.float().squeeze(1) + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).cpu().numpy()


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Scaled posterior-mode latents ``(N, C, h, w)`` of images ``(N, 1, H, W)`` in [-1, 1]."""
    model = extract_model_from_parallel(vae)
    images = images.to(device=model.device, dtype=model.dtype)
    return model.encode(images).latent_dist.mode() * model.config.scaling_factor


def _batches(n: int, batch_size: int) -> range:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return range(0, n, batch_size)


def encode_frames(vae: AutoencoderKL, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Encode uint8 frames ``(N, H, W)`` to float16 latents ``(N, C, H/f, W/f)``, f the
    :func:`downsampling`.

    The latents are the posterior mode (no sampling) times ``vae.config.scaling_factor``.
    """
    chunks = [
        encode_images(vae, frames_to_images(frames[i : i + batch_size])).float().cpu()
        for i in _batches(len(frames), batch_size)
    ]
    return torch.cat(chunks).numpy().astype(np.float16)


@torch.no_grad()
def decode_latents(
    vae: AutoencoderKL, latents: np.ndarray | torch.Tensor, batch_size: int = 64
) -> np.ndarray:
    """Decode scaled latents ``(N, C, h, w)`` to uint8 frames ``(N, f h, f w)``."""
    model = extract_model_from_parallel(vae)
    latents = torch.as_tensor(latents)
    frames = []
    for i in _batches(len(latents), batch_size):
        chunk = latents[i : i + batch_size].to(device=model.device, dtype=model.dtype)
        frames.append(images_to_frames(model.decode(chunk / model.config.scaling_factor).sample))
    return np.concatenate(frames)


def estimate_scaling_factor(vae: AutoencoderKL, frames: np.ndarray, batch_size: int = 64) -> float:
    """``1 / std`` of the unscaled latents of ``frames`` (uint8 ``(N, H, W)``), as SD does.

    The caller records it with ``vae.register_to_config(scaling_factor=...)``.
    """
    scale = extract_model_from_parallel(vae).config.scaling_factor
    latents = [
        encode_images(vae, frames_to_images(frames[i : i + batch_size])).float() / scale
        for i in _batches(len(frames), batch_size)
    ]
    std = torch.cat(latents).std().item()
    if not np.isfinite(std) or std <= 0:
        raise ValueError(f"latent std must be finite and positive, got {std}")
    return 1.0 / std
