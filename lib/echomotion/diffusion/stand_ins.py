"""Random MCDM training items shaped like the real windows (``tasks/mcdm_train``'s
dataset items), for the benchmarks, the GPU check and the tests that time or train the
UNet without data: one builder, so a new conditioning input is added in one place."""

from __future__ import annotations

import torch

from echomotion.diffusion.params import MCDMModelParams


def random_window(
    model: MCDMModelParams,
    side: int,
    generator: torch.Generator | None = None,
    num_frames: int | None = None,
    fps: float = 25.0,
    heart_rate: float = 75.0,
) -> dict[str, torch.Tensor]:
    """One item: ``latents`` ``(T, C, side, side)`` (T = ``num_frames`` or the model's),
    ``ref_latent`` its first frame (a window starts at its reference), a ``motion`` vector,
    ``fps`` and ``heart_rate`` (bpm; read by ``time_ids: heart_rate`` only) and, for a model
    with the channel, each frame's ``contraction`` in [0, 1)."""
    t = num_frames or model.num_frames
    latents = torch.randn(t, model.latent_channels, side, side, generator=generator)
    item = {
        "latents": latents,
        "ref_latent": latents[0].clone(),
        "motion": torch.randn(model.motion_dim, generator=generator),
        "fps": torch.tensor(float(fps)),
        "heart_rate": torch.tensor(float(heart_rate)),
    }
    if model.contraction:
        item["contraction"] = torch.rand(t, generator=generator)
    return item
