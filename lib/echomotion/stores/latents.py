"""Store ``data/latents.zarr``: every prepared frame through the VAE encoder.

Written by stage ``latents`` (:data:`LATENTS_SCHEMA`, frames aligned 1:1 with
``videos.zarr``); read by ``mcdm_train`` (random windows of latent frames).
"""

from __future__ import annotations

PATH = "data/latents.zarr"  # where the pipeline keeps it (dvc.yaml)

LATENTS_SCHEMA = {
    "latents": "(N_total, C, H/8, W/8) float16: VAE posterior mode times scaling_factor, "
    "aligned 1:1 with videos.zarr's frames (same videos, order and lengths).",
    "offsets": "(n_videos + 1,) int64: video i = latents[offsets[i]:offsets[i+1]].",
    "videos": "per-video table: file_name, video (index in videos.zarr), split, fps.",
    "attrs": "scaling_factor (already applied), frame_size [H, W], schema.",
}
