"""Training objectives of the VAE and of the MCDM, callable by the generic training loop.

Bind the extra arguments with ``functools.partial`` to get ``loss_fn(model, batch)``::

    loss_fn = partial(mcdm_loss, scheduler=build_scheduler(schedule), params=loss_params)
"""

from __future__ import annotations

import torch
from accelerate.utils import extract_model_from_parallel
from diffusers import AutoencoderKL, DDPMScheduler, UNetSpatioTemporalConditionModel

from echomotion.diffusion.conditioning import (
    augment_reference,
    condition_time_ids,
    drop_motion,
    jitter_motion,
    to_residual,
)
from echomotion.diffusion.metrics import ssim
from echomotion.diffusion.params import (
    MCDMLossParams,
    NoiseScheduleParams,
    VAELossParams,
    context_dim_of,
)
from echomotion.diffusion.unet import unet_predict
from echomotion.training.forward import through_forward


def build_scheduler(params: NoiseScheduleParams) -> DDPMScheduler:
    """The DDPM scheduler that defines the forward process (and samples by default);
    ``clip_sample`` acts only in its ``step`` (sampling), never in ``add_noise``."""
    return DDPMScheduler(
        num_train_timesteps=params.num_train_timesteps,
        beta_schedule=params.beta_schedule,
        beta_start=params.beta_start,
        beta_end=params.beta_end,
        prediction_type=params.prediction_type,
        clip_sample=params.clip_sample,
        clip_sample_range=params.clip_sample_range,
    )


def vae_loss(
    vae: AutoencoderKL, batch: dict[str, torch.Tensor], params: VAELossParams
) -> tuple[torch.Tensor, dict[str, float]]:
    """VAE objective on ``batch["image"]`` ``(B, 1, H, W)`` in [-1, 1] -> (loss, logs).

    Reconstruction and KL are both means per element (pixel / latent element).
    """

    # 1. encode, sample the posterior, decode: inside the (possibly DDP-wrapped) model's
    # forward, so several processes average the gradients
    def round_trip(model: AutoencoderKL):
        images = batch["image"].to(device=model.device, dtype=model.dtype)
        posterior = model.encode(images).latent_dist
        return images, posterior, model.decode(posterior.sample()).sample

    images, posterior, recon = through_forward(vae, round_trip)
    # 2. terms
    diff = recon.float() - images.float()
    rec = diff.abs().mean() if params.reconstruction == "l1" else diff.pow(2).mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    loss = rec + params.kl_weight * kl
    logs = {"rec": rec.item(), "kl": kl.item()}
    if params.ssim_weight > 0:
        ssim_term = 1.0 - ssim(recon.float(), images.float(), data_range=2.0).mean()
        loss = loss + params.ssim_weight * ssim_term
        logs["ssim"] = 1.0 - ssim_term.item()
    logs["loss"] = loss.item()
    return loss, logs


def _check_mcdm_batch(
    unet: UNetSpatioTemporalConditionModel, batch: dict, motion_tokens: int = 1
) -> None:
    config = extract_model_from_parallel(unet).config
    dim = context_dim_of(config.cross_attention_dim, motion_tokens)
    latents, ref, motion = batch["latents"], batch["ref_latent"], batch["motion"]
    if latents.ndim != 5 or latents.shape[2] != config.out_channels:
        raise ValueError(
            f"latents must be (B, T, {config.out_channels}, h, w), got {tuple(latents.shape)}"
        )
    b, _, c, h, w = latents.shape
    if tuple(ref.shape) != (b, c, h, w):
        raise ValueError(f"ref_latent must be {(b, c, h, w)}, got {tuple(ref.shape)}")
    if tuple(motion.shape) != (b, dim):
        raise ValueError(
            f"motion must be {(b, dim)} (cross_attention_dim {config.cross_attention_dim}, "
            f"{motion_tokens} token(s)), got {tuple(motion.shape)}"
        )
    mask = batch.get("frame_mask")
    if mask is not None and tuple(mask.shape) != tuple(latents.shape[:2]):
        raise ValueError(f"frame_mask must be {tuple(latents.shape[:2])}, got {tuple(mask.shape)}")


def _diffusion_target(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return noise


def snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Per-sample loss weights ``(B,)`` of min-SNR-gamma (Hang et al. 2023); ones when None.

    The weight makes every timestep's loss an x0-space error clipped at SNR ``gamma``:
    ``min(SNR, gamma) / SNR`` for epsilon and ``min(SNR, gamma) / (SNR + 1)`` for v.
    """
    if gamma is None:
        return torch.ones(t.shape, device=t.device)
    alphas = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alphas / (1.0 - alphas)
    denominator = snr + 1.0 if scheduler.config.prediction_type == "v_prediction" else snr
    return snr.clamp(max=gamma) / denominator


def per_sample_mse(
    pred: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error per sample ``(B,)`` of ``(B, T, C, h, w)`` tensors; with a
    ``frame_mask`` ``(B, T)`` (1 = real frame, 0 = padding) the mean over real frames only.

    The official loss (LabelfreeMCDM train_motion.py l.453-458, 511-514) also keeps the first
    padded frame (``index <= n_real``) and divides by all T frames, so its padded windows
    weigh less; here a padded window weighs as much as a full one.
    """
    squared = (pred.float() - target.float()).pow(2)
    if frame_mask is None:
        return squared.flatten(1).mean(1)
    per_frame = squared.flatten(2).mean(2)  # (B, T)
    mask = frame_mask.to(per_frame)
    return (per_frame * mask).sum(1) / mask.sum(1).clamp(min=1.0)


MIN_MOTION_ENERGY = 0.05  # floor of motion_balance's energy: weights at most 20**p


def motion_balance_weights(
    residual: torch.Tensor, frame_mask: torch.Tensor | None, params: MCDMLossParams
) -> torch.Tensor:
    """Per-window weights ``(B,)``: ``max(E, MIN_MOTION_ENERGY) ** -motion_balance``, ``E``
    the mean squared scaled residual ``(B, T, C, h, w)`` over the window's real frames (the
    residual scale makes it 1 on average over the TRAIN windows)."""
    energy = per_sample_mse(residual, torch.zeros_like(residual), frame_mask)
    return energy.clamp(min=MIN_MOTION_ENERGY).pow(-params.motion_balance)


def training_timesteps(
    n: int, num_train_timesteps: int, shift: float = 1.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``n`` training timesteps: uniform for ``shift`` 1 (``torch.randint``, the draws of
    the official code), else ``floor(T * s*u / (1 + (s-1)*u))`` with ``u`` uniform, which
    moves the median timestep from T/2 to T * s / (s + 1)."""
    if shift == 1.0:
        return torch.randint(0, num_train_timesteps, (n,), device=device)
    u = torch.rand(n, device=device)
    shifted = shift * u / (1.0 + (shift - 1.0) * u)
    return (shifted * num_train_timesteps).long().clamp(max=num_train_timesteps - 1)


def mcdm_loss(
    unet: UNetSpatioTemporalConditionModel,
    batch: dict[str, torch.Tensor],
    scheduler: DDPMScheduler,
    params: MCDMLossParams,
    time_ids: str = "signals",
    residual_scale: float | None = None,
    motion_tokens: int = 1,
    fixed_columns: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE between the UNet output and the v (or eps) target at a random timestep.

    ``batch``: ``latents`` ``(B, T, C, h, w)`` and ``ref_latent`` ``(B, C, h, w)``, both scaled;
    ``motion`` ``(B, D)`` (the whole cross-attention token); optional ``fps`` ``(B,)`` (else
    the fps id is 0), ``heart_rate`` ``(B,)`` (bpm; needed by ``time_ids="heart_rate"``),
    ``contraction`` ``(B, T)`` (each frame's, for a UNet with the contraction channel; zeroed
    with the motion) and ``frame_mask`` ``(B, T)`` (zero-padded frames of short windows are 0
    and left out of the loss). ``time_ids``: ``"signals"``, ``"zeros"`` or ``"heart_rate"``
    (:func:`~echomotion.diffusion.conditioning.condition_time_ids`). ``residual_scale``:
    diffuse ``(latents - ref_latent) * residual_scale`` (the clean reference) instead of the
    latents (:func:`~echomotion.diffusion.conditioning.to_residual`). ``motion_tokens``: the
    context's token count (:func:`~echomotion.diffusion.conditioning.motion_context`).
    With ``params.motion_balance`` each window's loss is weighted by
    :func:`motion_balance_weights` (needs ``residual_scale``). With ``params.motion_noise``
    the token gets Gaussian noise, all but its first ``fixed_columns`` (1 for an EF token).
    """
    # 1. inputs
    _check_mcdm_batch(unet, batch, motion_tokens)
    latents, ref, motion = (batch[k].float() for k in ("latents", "ref_latent", "motion"))
    if residual_scale is not None:
        latents = to_residual(latents, ref, residual_scale)
    b, device = latents.shape[0], latents.device
    fps = batch.get("fps", torch.zeros(b)).to(device)
    # 2. motion jitter, condition dropout (classifier-free guidance), reference augmentation
    motion = jitter_motion(motion, params.motion_noise, fixed_columns)
    motion, dropped = drop_motion(motion, params.cond_dropout)
    strength = torch.rand(b, device=device) * params.ref_noise_aug
    if params.ref_noise_aug > 0:
        ref = augment_reference(ref, strength)
    # 3. forward diffusion (noise offset: a constant per sample and channel, over T, h, w)
    t = training_timesteps(b, scheduler.config.num_train_timesteps, params.timestep_shift, device)
    noise = torch.randn_like(latents)
    if params.noise_offset > 0:
        offset = torch.randn(b, 1, latents.shape[2], 1, 1, device=device)
        noise = noise + params.noise_offset * offset
    noisy = scheduler.add_noise(latents, noise, t)
    # 4. prediction and (min-SNR weighted) loss
    heart_rate = batch.get("heart_rate")
    heart_rate = None if heart_rate is None else heart_rate.to(device)
    ids = condition_time_ids(time_ids, fps, strength, dropped, heart_rate).to(device)
    contraction = batch.get("contraction")
    if contraction is not None:  # dropped with the motion: the whole motion condition
        contraction = contraction.to(device).float() * (1.0 - dropped.to(device))[:, None]
    pred = unet_predict(unet, noisy, ref, motion, ids, t, motion_tokens, contraction)
    target = _diffusion_target(scheduler, latents, noise, t).float()
    per_sample = per_sample_mse(pred, target, batch.get("frame_mask"))  # (B,)
    weights = snr_weights(scheduler, t, params.snr_gamma)
    if params.motion_balance > 0:
        if residual_scale is None:
            raise ValueError("motion_balance weighs windows by their residual: needs residual")
        weights = weights * motion_balance_weights(latents, batch.get("frame_mask"), params)
    loss = (weights * per_sample).mean()
    return loss, {"loss": loss.item(), "motion_dropped": dropped.mean().item()}
