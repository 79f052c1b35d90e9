"""Stages of the generator group: the latent VAE, latents, the MCDM and sampling.

``vae_train`` trains the grayscale ``AutoencoderKL`` and records its latent scaling
factor; ``latents`` encodes every prepared frame; ``mcdm_train`` trains the
motion-conditioned video UNet (one or many processes) and saves the sampling pipeline;
``sample`` writes a synthetic EchoNet-Dynamic-format dataset. The command
``python -m echomotion.generate`` makes one video from a driving and an appearance video.
"""

from .conditioning import CONDITIONING_FILE, MotionNormalizer, load_pipeline, sampling_scheduler
from .latents import LATENTS_SCHEMA, encode_videos, load_vae
from .mcdm import LatentClipDataset, load_clip_data, save_pipeline, train_mcdm
from .params import LatentsParams, MCDMTrainParams, SampleParams, SamplerName, VAETrainParams
from .sample import EXTRA_COLUMNS, generate_videos, plan_sources, sample_dataset
from .vae import FrameDataset, split_frames, spread_frames, train_vae

__all__ = [
    "CONDITIONING_FILE",
    "EXTRA_COLUMNS",
    "LATENTS_SCHEMA",
    "FrameDataset",
    "LatentClipDataset",
    "LatentsParams",
    "MCDMTrainParams",
    "MotionNormalizer",
    "SampleParams",
    "SamplerName",
    "VAETrainParams",
    "encode_videos",
    "generate_videos",
    "load_clip_data",
    "load_pipeline",
    "load_vae",
    "plan_sources",
    "sample_dataset",
    "sampling_scheduler",
    "save_pipeline",
    "split_frames",
    "spread_frames",
    "train_mcdm",
    "train_vae",
]
