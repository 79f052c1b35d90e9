"""Conditioning signals of the MCDM, shared by the training loss and the pipeline.

The SVD UNet adds an embedding of three scalars per sample (``added_time_ids``) to its
timestep embedding. Here they are, in order:

``fps``
    Frame rate of the clip (0 when unknown); it sets the time scale of the motion.
``noise_aug_strength``
    Std of the Gaussian noise added to the reference latent (SVD's conditioning
    augmentation); 0 unless ``MCDMLossParams.ref_noise_aug`` > 0 in training, chosen at
    sampling time.
``motion_dropped``
    1 when the motion condition is dropped (classifier-free guidance's unconditional branch),
    else 0. Together with the zeroed motion vector it acts as a learned null condition that a
    genuine all-zero motion vector cannot be confused with.

``heart_rate`` (``time_ids="heart_rate"`` only, a fourth id)
    Beats per minute of the motion: in training the video's own, from its label-free ED
    frames (:func:`echomotion.edes.heart_rate_bpm`); in sampling the driving video's. The
    motion vector of an ED/ES pair says how far the walls travel, not when: without this id
    the model draws every heart at the training set's typical rhythm.

With ``time_ids="zeros"`` (the official code: train_motion.py l.492-495, sample_motion.py
l.148) all three are zero in training and sampling, so the time embedding receives a learned
constant and the motion token is the only condition.

With ``residual`` (``MCDMModelParams.residual``) the diffused variable is a window's
difference from the reference latent times a scale (:func:`to_residual`), and a sample is
the reference plus the denoised difference over the scale (:func:`from_residual`).

With EF conditioning (the official EF+motion variant) the cross-attention token is
``[EF / 100, motion]``, EF first (:func:`ef_token`).

The cross-attention context (:func:`motion_context`) is that token alone (the paper), or,
with ``MCDMModelParams.motion_tokens`` K > 1, the token cut into K equal chunks, each
followed by its one-hot index. Attention over a single key has softmax weight 1 whatever
the query, so one token reaches every position and frame as the same vector; with K tokens
each position weighs the chunks (for the default MAFE's 768-d vector and K = 6: each frame's
pooled motion of the two last stages, 128 channels a chunk) by its own query.
"""

from __future__ import annotations

from typing import get_args

import torch
from diffusers.utils.torch_utils import randn_tensor

from echomotion.diffusion.params import TimeIds, token_width

ADDED_TIME_IDS = ("fps", "noise_aug_strength", "motion_dropped")
NUM_ADDED_TIME_IDS = len(ADDED_TIME_IDS)


def time_id_names(mode: str) -> tuple[str, ...]:
    """The time ids the UNet gets for ``time_ids`` ``mode``, in order."""
    if mode not in get_args(TimeIds):
        raise ValueError(f"time_ids must be one of {get_args(TimeIds)}, got {mode!r}")
    return ADDED_TIME_IDS + (("heart_rate",) if mode == "heart_rate" else ())


def added_time_ids(
    fps: torch.Tensor, noise_aug_strength: torch.Tensor, motion_dropped: torch.Tensor
) -> torch.Tensor:
    """Stack per-sample ids ``(B,)`` into float32 ``(B, 3)``, in ``ADDED_TIME_IDS`` order."""
    return torch.stack([fps.float(), noise_aug_strength.float(), motion_dropped.float()], dim=1)


def condition_time_ids(
    mode: str,
    fps: torch.Tensor,
    noise_aug_strength: torch.Tensor,
    motion_dropped: torch.Tensor,
    heart_rate: torch.Tensor | None = None,
) -> torch.Tensor:
    """The time ids ``(B, len(time_id_names(mode)))`` the UNet gets: :func:`added_time_ids`
    for ``"signals"``, all zeros for ``"zeros"``, and for ``"heart_rate"`` those followed by
    ``heart_rate`` ``(B,)`` (beats per minute; required)."""
    names = time_id_names(mode)
    if mode == "zeros":
        return torch.zeros(len(fps), len(names), device=fps.device)
    ids = added_time_ids(fps, noise_aug_strength, motion_dropped)
    if mode != "heart_rate":
        return ids
    if heart_rate is None:
        raise ValueError("time_ids 'heart_rate' needs each sample's heart rate (bpm)")
    if heart_rate.shape != fps.shape:
        raise ValueError(f"heart_rate must be {tuple(fps.shape)}, got {tuple(heart_rate.shape)}")
    return torch.cat([ids, heart_rate.to(ids)[:, None]], dim=1)


def ef_token(motion: torch.Tensor, ef: torch.Tensor) -> torch.Tensor:
    """The EF+motion token ``(B, 1 + D)``: ``EF / 100`` ``(B,)`` (EF in percent) before the
    motion vectors ``(B, D)``."""
    if ef.shape != motion.shape[:1]:
        raise ValueError(f"ef must be ({motion.shape[0]},), got {tuple(ef.shape)}")
    return torch.cat([ef.to(motion)[:, None] / 100.0, motion], dim=1)


def motion_context(motion: torch.Tensor, tokens: int = 1) -> torch.Tensor:
    """The cross-attention context ``(B, K, width)`` of conditions ``(B, D)``.

    One token: the condition itself ``(B, 1, D)``. K > 1: K chunks of ``D / K`` in order,
    each followed by its one-hot index ``(K,)``, so a dropped (all-zero) condition still
    gives K distinct keys.
    """
    b, d = motion.shape
    token_width(d, tokens)  # the one check that the tokens cut the condition evenly
    if tokens == 1:
        return motion[:, None, :]
    chunks = motion.reshape(b, tokens, d // tokens)
    index = torch.eye(tokens, device=motion.device, dtype=motion.dtype).expand(b, -1, -1)
    return torch.cat([chunks, index], dim=2)


def jitter_motion(
    motion: torch.Tensor, std: float, keep: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``motion`` ``(B, D)`` plus Gaussian noise of std ``std`` on every column but the first
    ``keep`` (the EF entry of an :func:`ef_token`); unchanged, and no random draw, at 0."""
    if std == 0:
        return motion
    noise = randn_tensor(motion.shape, generator=generator, device=motion.device,
                         dtype=motion.dtype)  # fmt: skip
    noise[:, :keep] = 0
    return motion + std * noise


def drop_motion(
    motion: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero each sample's motion vector ``(B, D)`` with probability ``p``.

    Returns the motion and the float mask ``(B,)`` (1 = dropped) for the ``motion_dropped`` id.
    """
    draw = torch.rand(motion.shape[0], generator=generator, device="cpu").to(motion.device)
    dropped = (draw < p).float()  # (B,)
    return motion * (1.0 - dropped)[:, None], dropped


def augment_reference(
    ref_latent: torch.Tensor, strength: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add Gaussian noise with per-sample std ``strength`` ``(B,)`` to latents ``(B, C, h, w)``."""
    noise = randn_tensor(
        ref_latent.shape, generator=generator, device=ref_latent.device, dtype=ref_latent.dtype
    )
    return ref_latent + strength.to(ref_latent)[:, None, None, None] * noise


@torch.no_grad()
def motion_from_driving_video(
    mafe: torch.nn.Module, video: torch.Tensor, ed: int, es: int
) -> torch.Tensor:
    """Motion vector ``(1, D)`` of the ED/ES pair of a uint8 video ``(T, H, W)``.

    ``mafe.motion_vector(img0, img1)`` receives float ``(1, 1, H, W)`` frames in [0, 1] on the
    module's device (the project's network input convention).
    """
    device = next(mafe.parameters()).device
    pair = video[[ed, es]].to(device=device).float()[:, None] / 255.0  # (2, 1, H, W)
    motion = mafe.motion_vector(pair[:1], pair[1:])
    return motion.reshape(1, -1).float()


def to_residual(latents: torch.Tensor, base: torch.Tensor, scale: float) -> torch.Tensor:
    """``(latents - base) * scale`` for latents ``(B, T, C, h, w)`` and a base ``(B, C, h, w)``
    (the reference latent, repeated over T)."""
    return (latents - base[:, None]) * scale


def from_residual(residual: torch.Tensor, base: torch.Tensor, scale: float) -> torch.Tensor:
    """The latents ``(B, T, C, h, w)`` of a scaled residual: inverse of :func:`to_residual`."""
    return base[:, None] + residual / scale
