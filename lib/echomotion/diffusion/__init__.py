"""Latent VAE and motion-conditioned video diffusion model (MCDM): the generator."""

from echomotion.diffusion.conditioning import (
    ADDED_TIME_IDS,
    added_time_ids,
    augment_reference,
    drop_motion,
    motion_from_driving_video,
)
from echomotion.diffusion.losses import (
    MCDMLossParams,
    NoiseScheduleParams,
    VAELossParams,
    build_scheduler,
    mcdm_loss,
    vae_loss,
)
from echomotion.diffusion.metrics import psnr, reconstruction_metrics, ssim
from echomotion.diffusion.pipeline import (
    MotionConditionedVideoPipeline,
    MotionVideoPipelineOutput,
    window_starts,
)
from echomotion.diffusion.unet import (
    MCDMModelParams,
    build_unet,
    crop_to,
    pad_to_multiple,
    unet_predict,
)
from echomotion.diffusion.vae import (
    VAEModelParams,
    build_vae,
    decode_latents,
    encode_frames,
    encode_images,
    estimate_scaling_factor,
    frames_to_images,
    images_to_frames,
)

__all__ = [
    "ADDED_TIME_IDS",
    "MCDMLossParams",
    "MCDMModelParams",
    "MotionConditionedVideoPipeline",
    "MotionVideoPipelineOutput",
    "NoiseScheduleParams",
    "VAELossParams",
    "VAEModelParams",
    "added_time_ids",
    "augment_reference",
    "build_scheduler",
    "build_unet",
    "build_vae",
    "crop_to",
    "decode_latents",
    "drop_motion",
    "encode_frames",
    "encode_images",
    "estimate_scaling_factor",
    "frames_to_images",
    "images_to_frames",
    "mcdm_loss",
    "motion_from_driving_video",
    "pad_to_multiple",
    "psnr",
    "reconstruction_metrics",
    "ssim",
    "unet_predict",
    "vae_loss",
    "window_starts",
]
