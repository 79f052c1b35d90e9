"""The motion-conditioned video denoiser: a diffusers ``UNetSpatioTemporalConditionModel``.

Input per frame: 4 noisy latent channels + the 4 reference-frame latent channels (the same
reference repeated over time), so ``in_channels = 8``; with ``contraction``
(``MCDMModelParams.contraction``) a ninth channel holds the frame's contraction (the
driver's label-free curve, :func:`echomotion.edes.contraction_curve`: 0 at ED, 1 at ES),
constant over the frame, so each frame is told where in the beat it lies. The motion vector
``(B, D)`` is the cross-attention context: a single token (``cross_attention_dim = D``; ``D
+ 1`` with EF/100 first when ``condition_ef``, the official EF+motion variant), or
``motion_tokens`` chunks of it with their one-hot indices
(:func:`~echomotion.diffusion.conditioning.motion_context`). The ``added_time_ids`` (three,
or four with the heart rate) are described in :mod:`echomotion.diffusion.conditioning`.

Latents are 28x28 (or 14x14); the UNet halves the size ``len(block_out_channels) - 1``
times, so :func:`unet_predict` reflect-pads H and W up to a multiple of
``2 ** num_upsamplers`` (14 -> 16 for 3 or 4 levels, 28 -> 32 for 4 levels) and crops the
prediction back. Reflection keeps the padded border noise-like at every noise level, where
zeros would be a constant frame the model never sees in the interior.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from diffusers import UNetSpatioTemporalConditionModel
from einops import repeat

from echomotion.diffusion.conditioning import motion_context, time_id_names
from echomotion.diffusion.params import MCDMModelParams


def build_unet(params: MCDMModelParams) -> UNetSpatioTemporalConditionModel:
    """A freshly initialised video UNet; the levels of ``params.attention_levels`` have
    spatial/temporal self-attention and cross-attention to the motion tokens."""
    attention = params.attention_levels
    down = tuple(f"{'CrossAttn' if a else ''}DownBlockSpatioTemporal" for a in attention)
    up = tuple(f"{'CrossAttn' if a else ''}UpBlockSpatioTemporal" for a in reversed(attention))
    return UNetSpatioTemporalConditionModel(
        in_channels=2 * params.latent_channels + int(params.contraction),
        out_channels=params.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=params.block_out_channels,
        addition_time_embed_dim=params.addition_time_embed_dim,
        projection_class_embeddings_input_dim=len(time_id_names(params.time_ids))
        * params.addition_time_embed_dim,
        layers_per_block=params.layers_per_block,
        cross_attention_dim=params.token_width,
        num_attention_heads=tuple(
            c // params.attention_head_dim for c in params.block_out_channels
        ),
        num_frames=params.num_frames,
    )


def takes_contraction(unet: UNetSpatioTemporalConditionModel) -> bool:
    """Whether ``unet`` (possibly wrapped) has the contraction input channel."""
    config = extract_model_from_parallel(unet).config
    return config.in_channels == 2 * config.out_channels + 1


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two dims of ``(..., H, W)`` up to multiples of ``multiple``.

    Returns the padded tensor and the (top, left) offsets that :func:`crop_to` needs.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    top, left = ph // 2, pw // 2
    if ph == 0 and pw == 0:
        return x, (0, 0)
    flat = x.reshape(-1, *x.shape[-3:])  # (N, C, H, W): reflect pad wants 4-D
    padded = F.pad(flat, (left, pw - left, top, ph - top), mode="reflect")
    return padded.reshape(*x.shape[:-2], h + ph, w + pw), (top, left)


def crop_to(x: torch.Tensor, size: tuple[int, int], offset: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: the ``size`` window of ``(..., H, W)`` at ``offset``."""
    (top, left), (h, w) = offset, size
    return x[..., top : top + h, left : left + w]


def unet_predict(
    unet: UNetSpatioTemporalConditionModel,
    noisy_latents: torch.Tensor,
    ref_latent: torch.Tensor,
    motion: torch.Tensor,
    added_time_ids: torch.Tensor,
    timestep: torch.Tensor,
    motion_tokens: int = 1,
    contraction: torch.Tensor | None = None,
) -> torch.Tensor:
    """The UNet output ``(B, T, C, h, w)`` for noisy latents ``(B, T, C, h, w)``.

    ``ref_latent`` ``(B, C, h, w)`` is repeated over T and concatenated on channels, then
    ``contraction`` ``(B, T)`` as one more channel, each frame's value over the whole frame
    (required exactly when the UNet was built with it: :func:`takes_contraction`);
    ``motion`` ``(B, D)`` becomes the context of ``motion_tokens`` tokens
    (:func:`~echomotion.diffusion.conditioning.motion_context`); ``timestep`` is a scalar
    or ``(B,)``.
    ``unet`` may be wrapped (DDP, compile): it is called, not unwrapped, for the forward.
    """
    # 1. input: noisy latents next to the reference latent
    b, num_frames, _, h, w = noisy_latents.shape
    ref = repeat(ref_latent, "b c h w -> b t c h w", t=num_frames)
    inputs = [noisy_latents, ref]
    if takes_contraction(unet) != (contraction is not None):
        raise ValueError(
            "this UNet takes a per-frame contraction channel: pass `contraction` (B, T)"
            if contraction is None
            else "`contraction` given, but this UNet has no contraction channel"
        )
    if contraction is not None:
        if tuple(contraction.shape) != (b, num_frames):
            raise ValueError(
                f"contraction must be {(b, num_frames)}, got {tuple(contraction.shape)}"
            )
        channel = contraction.to(noisy_latents)[:, :, None, None, None]
        inputs.append(channel.expand(b, num_frames, 1, h, w))
    sample = torch.cat(inputs, dim=2)  # (B, T, 2C [+ 1], h, w)
    # 2. pad to the size the UNet halves cleanly
    multiple = 2 ** extract_model_from_parallel(unet).num_upsamplers
    sample, offset = pad_to_multiple(sample, multiple)
    # 3. denoise, conditioned on the motion token and the time ids
    context = motion_context(motion, motion_tokens)  # (B, K, width)
    out = unet(sample, timestep, context, added_time_ids, return_dict=False)[0]
    # 4. crop back to the latent size
    return crop_to(out, tuple(noisy_latents.shape[-2:]), offset)
