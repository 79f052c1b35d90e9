"""Params of the diffusion models: pydantic only (validating params.yaml loads no model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from echomotion.section import Fraction, Section

SamplerName = Literal["ddpm", "ddim", "dpmsolver++"]


ReferenceFrame = Literal["window_start", "random"]


ShortVideos = Literal["drop", "pad"]

# where training windows (and so the videos generated from their reference) start: any frame,
# or a label-free ED (echomotion.edes.Beats.window_anchors)
WindowAnchor = Literal["any", "ed"]


TimeIds = Literal["signals", "zeros", "heart_rate"]  # see echomotion.diffusion.conditioning


GROUPNORM_GROUPS = 32  # hard-coded in diffusers' spatio-temporal blocks: widths must divide by it


def token_width(context_dim: int, tokens: int) -> int:
    """Width of each cross-attention token (the UNet's ``cross_attention_dim``) when a
    ``context_dim`` condition is cut into ``tokens`` chunks, each followed by its one-hot
    index (:func:`echomotion.diffusion.conditioning.motion_context`)."""
    if tokens < 1 or context_dim % tokens:
        raise ValueError(f"{tokens} motion tokens must divide the {context_dim}-d condition")
    return context_dim if tokens == 1 else context_dim // tokens + tokens


def context_dim_of(width: int, tokens: int) -> int:
    """The condition's width for tokens ``width`` wide: the inverse of :func:`token_width`."""
    return width if tokens == 1 else (width - tokens) * tokens


def guidance_refusal(guidance_scale: float, cond_dropout: float | None) -> str | None:
    """Why classifier-free guidance at ``guidance_scale`` cannot be used with a model trained
    with ``cond_dropout`` (``None``: it can; an unknown ``cond_dropout`` is not refused).

    Guidance extrapolates from the motion-dropped prediction; a model that never saw a
    dropped motion has that branch untrained, and guidance would push every video towards
    noise. The one rule behind the params check, the pipeline and ``echomotion-generate``.
    """
    if guidance_scale == 1.0 or cond_dropout != 0:
        return None
    return (
        f"guidance_scale {guidance_scale} needs a model trained with the motion dropped for "
        "some samples (cond_dropout > 0); this one was trained with cond_dropout 0, so its "
        "unconditional branch is untrained"
    )


class VAEModelParams(Section):
    """Size of the latent autoencoder (the default is a tiny CPU model)."""

    block_out_channels: tuple[int, ...] = Field(
        (16, 32, 64, 64),
        description="Channels per level; L levels downsample 2**(L-1)x (4 levels: 112 -> 14).",
    )
    layers_per_block: int = Field(1, ge=1)
    norm_num_groups: int = Field(16, ge=1, description="GroupNorm groups; divides every width.")
    latent_channels: int = Field(4, ge=1)

    @field_validator("block_out_channels")
    @classmethod
    def _levels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not 2 <= len(value) <= 4:
            raise ValueError(
                f"block_out_channels needs 2 to 4 entries (2x to 8x downsampling), got {value}"
            )
        return value

    @property
    def downsampling(self) -> int:
        """Frame side / latent side."""
        return 2 ** (len(self.block_out_channels) - 1)

    @model_validator(mode="after")
    def _groups_divide_widths(self) -> VAEModelParams:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"norm_num_groups ({self.norm_num_groups}) must divide every block_out_channels "
                f"entry, not {bad}"
            )
        return self


class MCDMModelParams(Section):
    """Size of the video UNet (the default is a tiny CPU model; the paper uses 128,256,256,512)."""

    block_out_channels: tuple[int, ...] = Field(
        (32, 64, 64), description="Channels per level, multiples of 32; >= 2 levels."
    )
    layers_per_block: int = Field(1, ge=1)
    attention_head_dim: int = Field(32, ge=1, description="Channels per attention head.")
    motion_dim: int = Field(128, ge=1, description="D of the motion vector (cross-attention).")
    num_frames: int = Field(8, ge=1, description="Frames per training window.")
    latent_channels: int = Field(4, ge=1)
    addition_time_embed_dim: int = Field(32, ge=2, description="Sinusoid size per time id.")
    attention: tuple[bool, ...] | None = Field(
        None,
        description="Per level: spatial and temporal attention with the motion token "
        "(cross-attention); None: every level but the deepest, as SVD. Attention at 28x28 "
        "latents costs ~9x the rest of a CPU step.",
    )
    time_ids: TimeIds = Field(
        "signals",
        description="What the UNet's added time ids carry, in training and sampling: "
        "'signals' = fps, noise_aug_strength, motion_dropped; 'zeros' = all zero (the "
        "official code), so the time embedding only gets a learned constant; "
        "'heart_rate' = the signals and a fourth id, the beats per minute from the label-free "
        "ED frames (the training video's; in sampling the driver's).",
    )
    residual: bool = Field(
        False,
        description="Diffuse the window's difference from the reference latent, scaled to "
        "unit RMS over the TRAIN windows (the scale is saved with the pipeline), rather than "
        "the latents themselves (the paper): the reference's appearance is then copied "
        "exactly and the whole loss is spent on the motion.",
    )
    condition_ef: bool = Field(
        False,
        description="Prepend EF/100 of the video to the motion token (the official EF+motion "
        "variant): cross-attention width motion_dim + 1; needs EF labels of the TRAIN videos "
        "and an EF at sampling time. False: label-free.",
    )

    contraction: bool = Field(
        False,
        description="Also condition each frame on the driver's label-free contraction at that "
        "frame (echomotion.edes.contraction_curve: the smoothed blood area of the detector, 0 "
        "at the clip's ED level, 1 at its ES level), one more UNet input channel: when the "
        "heart contracts, where the motion vector says how far. Dropped with the motion "
        "(classifier-free guidance). False: the paper's conditioning.",
    )
    motion_tokens: int = Field(
        1,
        ge=1,
        description="Cross-attention tokens the condition is cut into, each with its one-hot "
        "index (echomotion.diffusion.conditioning.motion_context); 1: the whole vector is one "
        "token (the paper), which every position receives alike. Must divide context_dim.",
    )

    @property
    def context_dim(self) -> int:
        """Width of the condition: the motion vector, plus EF when conditioned."""
        return self.motion_dim + int(self.condition_ef)

    @property
    def token_width(self) -> int:
        """Width of each cross-attention token (the UNet's ``cross_attention_dim``)."""
        return token_width(self.context_dim, self.motion_tokens)

    @property
    def attention_levels(self) -> tuple[bool, ...]:
        """Whether each level has attention (the resolved ``attention``)."""
        if self.attention is not None:
            return self.attention
        return (True,) * (len(self.block_out_channels) - 1) + (False,)

    @model_validator(mode="after")
    def _check(self) -> MCDMModelParams:
        if len(self.block_out_channels) < 2:
            raise ValueError(f"block_out_channels needs >= 2 levels, got {self.block_out_channels}")
        if self.attention is not None and (
            len(self.attention) != len(self.block_out_channels) or not any(self.attention)
        ):
            raise ValueError(
                f"attention needs one entry per level ({len(self.block_out_channels)}), at least "
                f"one true (the motion token enters through attention), got {self.attention}"
            )
        if self.context_dim % self.motion_tokens:
            raise ValueError(
                f"motion_tokens ({self.motion_tokens}) must divide the condition's width "
                f"({self.context_dim}: motion_dim{' + 1 for EF' if self.condition_ef else ''})"
            )
        for c in self.block_out_channels:
            if c % GROUPNORM_GROUPS or c % self.attention_head_dim:
                raise ValueError(
                    f"block_out_channels entry {c} must be a multiple of {GROUPNORM_GROUPS} "
                    f"and of attention_head_dim ({self.attention_head_dim})"
                )
        return self


class NoiseScheduleParams(Section):
    """The training noise schedule (saved with the pipeline as the DDPM scheduler config)."""

    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    beta_start: float = Field(1e-4, gt=0)
    beta_end: float = Field(0.02, gt=0, lt=1)
    prediction_type: Literal["v_prediction", "epsilon"] = "v_prediction"
    clip_sample: bool = Field(
        False,
        description="Clip the predicted clean latent to +-clip_sample_range in each sampler "
        "step (ddpm and ddim; dpmsolver++ has no such option). Training is unaffected.",
    )
    clip_sample_range: float = Field(
        1.0, gt=0, description="Bound of clip_sample, in scaled-latent units."
    )

    @model_validator(mode="after")
    def _check(self) -> NoiseScheduleParams:
        if self.beta_start >= self.beta_end:
            raise ValueError(f"beta_start ({self.beta_start}) must be < beta_end ({self.beta_end})")
        return self


class VAELossParams(Section):
    """Weights of the VAE objective: reconstruction + KL (+ optional 1 - SSIM), and LDM's
    LPIPS and PatchGAN terms (off by default; echomotion.diffusion.discriminator)."""

    reconstruction: Literal["l1", "l2"] = "l1"
    kl_weight: float = Field(1e-6, ge=0, description="On the KL averaged per latent element.")
    ssim_weight: float = Field(0.0, ge=0, description="Weight of 1 - SSIM; 0 skips it.")
    lpips_weight: float = Field(
        0.0, ge=0, description="Weight of the LPIPS distance; used only with lpips_weights."
    )
    lpips_weights: str | tuple[str, ...] | None = Field(
        None,
        description="Local VGG16-LPIPS weight file(s) (.safetensors or .pth state dicts, "
        "merged: trunk + linear heads); None: LPIPS off whatever lpips_weight says.",
    )
    disc_weight: float = Field(
        0.0, ge=0, description="Weight of the PatchGAN generator term; 0: no discriminator."
    )
    disc_start: int = Field(0, ge=0, description="Optimizer step from which the GAN terms act.")
    disc_adaptive: bool = Field(
        True, description="Scale disc_weight by VQGAN's last-layer gradient-norm ratio."
    )
    disc_loss: Literal["hinge", "vanilla"] = Field("hinge", description="Discriminator loss.")
    disc_layers: int = Field(3, ge=1, description="Stride-2 layers of the PatchGAN.")
    disc_channels: int = Field(64, ge=1, description="Width of the PatchGAN's first layer.")

    @property
    def lpips_active(self) -> bool:
        """Whether the LPIPS term is computed (a weight and a weights file)."""
        return self.lpips_weight > 0 and self.lpips_weights is not None

    @property
    def gan_or_lpips(self) -> bool:
        """Whether the objective is discriminator.vae_gan_loss rather than losses.vae_loss."""
        return self.disc_weight > 0 or self.lpips_active


class MCDMLossParams(Section):
    """Conditioning regularisers and weighting of the diffusion objective."""

    cond_dropout: Fraction = Field(0.1, description="P(motion dropped) per sample, for CFG.")
    ref_noise_aug: float = Field(
        0.0, ge=0, description="Max std of noise on the reference latent (uniform per sample)."
    )
    motion_noise: float = Field(
        0.0,
        ge=0,
        description="Std of Gaussian noise added to each training sample's motion vector (in "
        "TRAIN-standardised units; an EF entry of the token is left as is) before the dropout: "
        "a few dozen TRAIN vectors otherwise let the UNet key on each video's exact vector "
        "rather than on what it says about the motion; 0: off (the official).",
    )
    snr_gamma: float | None = Field(
        None, gt=0, description="Min-SNR-gamma loss weighting (Hang et al. 2023); None: uniform."
    )
    noise_offset: float = Field(
        0.0, ge=0, description="Std of a per-sample, per-channel constant added to the noise."
    )
    timestep_shift: float = Field(
        1.0,
        ge=1,
        description="Training timesteps t = T * s*u / (1 + (s-1)*u), u uniform on [0, 1): "
        "s > 1 spends more of the training at high noise, where a window's global motion "
        "is decided (the timestep shift of SD3); 1: uniform (the official).",
    )
    motion_balance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Exponent p of a per-window loss weight E**-p, E the window's mean "
        "squared residual (its motion energy, 1 on average; floored at 0.05): p = 1 weighs "
        "every window's error relative to its own motion, so a heart that moves little costs "
        "as much to leave static as one that moves a lot; 0: off. Needs model.residual.",
    )
