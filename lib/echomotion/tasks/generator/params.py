"""Params sections of the generator stages; the defaults are the CPU-sized pipeline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from echomotion.diffusion.params import (
    MCDMLossParams,
    MCDMModelParams,
    NoiseScheduleParams,
    VAELossParams,
    VAEModelParams,
)
from echomotion.section import Section, Split
from echomotion.training.params import LaunchParams, TrainParams

SamplerName = Literal["ddpm", "ddim", "dpmsolver++"]
ReferenceFrame = Literal["window_start", "random"]
ShortVideos = Literal["drop", "pad"]


class VAETrainParams(Section):
    """Stage ``vae_train``: the grayscale latent autoencoder on TRAIN frames."""

    model: VAEModelParams = VAEModelParams(block_out_channels=(8, 16, 32, 32), norm_num_groups=8)
    loss: VAELossParams = VAELossParams()
    train: TrainParams = TrainParams(
        steps=300, batch_size=8, lr=1e-3, warmup_steps=10, checkpoint_every=50, log_every=10
    )
    launch: LaunchParams = LaunchParams()
    crop_size: int | None = Field(
        64, ge=8, description="Random square crop of each training frame; None: whole frames."
    )
    scale_frames: int = Field(
        256, ge=2, description="TRAIN frames (evenly spaced) that set the latent scaling factor."
    )
    eval_frames: int = Field(
        128, ge=1, description="VAL frames (evenly spaced) scored by reconstruction PSNR/SSIM."
    )
    encode_batch_size: int = Field(64, ge=1, description="Frames per VAE call outside training.")

    @model_validator(mode="after")
    def _crop_fits_the_stride(self) -> VAETrainParams:
        factor = self.model.downsampling
        if self.crop_size is not None and self.crop_size % factor:
            raise ValueError(
                f"crop_size must be a multiple of {factor} (the VAE's downsampling), "
                f"got {self.crop_size}"
            )
        return self


class LatentsParams(Section):
    """Stage ``latents``: every prepared frame encoded once."""

    batch_size: int = Field(64, ge=1, description="Frames per VAE encoder call.")
    shard_frames: int = Field(4096, ge=1, description="Latent frames per shard file.")
    chunk_frames: int = Field(64, ge=1, description="Latent frames per compressed chunk.")

    @model_validator(mode="after")
    def _whole_chunks(self) -> LatentsParams:
        if self.shard_frames % self.chunk_frames:
            raise ValueError(
                f"shard_frames ({self.shard_frames}) must be a multiple of "
                f"chunk_frames ({self.chunk_frames})"
            )
        return self


class MCDMTrainParams(Section):
    """Stage ``mcdm_train``: the motion-conditioned video UNet on TRAIN latent windows.

    The window length is ``model.num_frames``; ``model.motion_dim`` must equal the
    ``motion_dim`` of the features store (checked before training).
    """

    model: MCDMModelParams = MCDMModelParams(block_out_channels=(32, 64), motion_dim=768)
    schedule: NoiseScheduleParams = NoiseScheduleParams()
    loss: MCDMLossParams = MCDMLossParams()
    train: TrainParams = TrainParams(
        steps=160,
        batch_size=4,
        lr=3e-4,
        warmup_steps=10,
        ema_decay=0.95,
        checkpoint_every=40,
        log_every=10,
    )
    launch: LaunchParams = LaunchParams()
    frame_stride: int = Field(
        1,
        ge=1,
        description="Window frames are every stride-th stored frame: fps / stride, "
        "num_frames * stride / fps seconds per window.",
    )
    reference: ReferenceFrame = Field(
        "window_start",
        description="Reference frame: the window's first frame (the video starts at the "
        "reference) or a random frame of the same video.",
    )
    short_videos: ShortVideos = Field(
        "drop",
        description="Videos with fewer frames than a window: 'drop' leaves them out; 'pad' "
        "keeps them, zero-pads their windows and leaves the padded frames out of the loss.",
    )
    random_phase: bool = Field(
        False,
        description="Draw a window's phase (first frame modulo frame_stride) first, then its "
        "start on that frame grid, as the official resampling does; with 'pad', windows that "
        "run past the end are padded. A no-op at frame_stride 1.",
    )
    normalize_motion: bool = Field(
        True,
        description="Standardise the motion vector with the TRAIN statistics; False: raw "
        "(the official code), and the pipeline keeps identity statistics.",
    )


class SampleParams(Section):
    """Stage ``sample``: the synthetic EchoNet-Dynamic-format dataset."""

    splits: tuple[Split, ...] = Field(
        ("TEST",), min_length=1, description="Motion sources: the videos of these splits."
    )
    scheduler: SamplerName = "dpmsolver++"
    num_inference_steps: int = Field(10, ge=1)
    guidance_scale: float = Field(1.0, ge=0, description="Classifier-free guidance; 1 = off.")
    num_frames: int = Field(
        24, ge=1, description="Frames per video; more than the training window -> stitching."
    )
    window_overlap: int | None = Field(
        None, ge=0, description="Known frames carried into each next window (None: window // 4)."
    )
    noise_aug_strength: float = Field(0.0, ge=0, description="Noise on the reference latent.")
    codec: Literal["mjpeg", "ffv1"] = "mjpeg"
    preview_sources: int = Field(
        3, ge=1, description="Motion sources shown in grid.png and samples.gif."
    )
    preview_frames: int = Field(8, ge=1, description="Frames per row of grid.png.")
    protocol: Literal["transfer", "official"] = Field(
        "transfer",
        description="transfer: per source a transfer video (next video's first frame) and a "
        "self video (own first frame); official (LabelfreeMCDM evaluation): sources sorted by "
        "file name, one self video each, its reference a random frame (seeded).",
    )
    max_sources: int | None = Field(
        None, ge=1, description="Only the first N motion sources (None: all; official: 2048)."
    )
