"""Stage ``latents``: every prepared frame through the VAE encoder, once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from echomotion.device import resolve_device
from echomotion.diffusion.vae import encode_frames, load_vae
from echomotion.params import Params
from echomotion.stage import write_json
from echomotion.stores import latents as latents_store
from echomotion.stores import videos as videos_store
from echomotion.stores.latents import open_writer
from echomotion.stores.ragged import RaggedStore
from echomotion.stores.videos import frame_size
from echomotion.tasks.latents.params import LatentsParams

logger = logging.getLogger(__name__)


def encode_videos(
    videos_path: str | Path,
    vae_dir: str | Path,
    out_path: str | Path,
    params: LatentsParams,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Write ``latents.zarr`` (schema :data:`LATENTS_SCHEMA`), the VAE running on
    ``device``; return counts and latent stats."""
    vae = load_vae(vae_dir).to(device)
    store = RaggedStore(videos_path)
    height, width = frame_size(store)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (vae.config.latent_channels, height // factor, width // factor)
    scale = float(vae.config.scaling_factor)
    total, sums = 0, np.zeros(2)
    writer = open_writer(
        out_path, shape, (height, width), scale, params.shard_frames, params.chunk_frames
    )
    with writer:
        for i in tqdm(range(len(store)), desc="latents", unit="video"):
            latents = encode_frames(vae, store.video(i), params.batch_size)  # (T, C, h, w)
            row = store.row(i)
            writer.append(
                {"latents": latents},
                file_name=str(row["file_name"]),
                video=i,
                split=str(row["split"]),
                fps=float(row["fps"]),
            )
            values = latents.astype(np.float64)
            total += len(latents)
            sums += np.array([values.sum(), np.square(values).sum()])
    mean = sums[0] / (total * np.prod(shape))
    std = float(np.sqrt(sums[1] / (total * np.prod(shape)) - mean**2))
    logger.info("encoded %d frames of %d videos: latent std %.3f", total, len(store), std)
    return {"videos": len(store), "frames": total, "scaling_factor": scale, "latent_std": std}


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    report = encode_videos(
        videos_store.PATH,
        "models/vae/model",
        latents_store.PATH,
        params.latents,
        device=resolve_device(params.shared.device),
    )
    write_json("metrics/latents.json", report)
