"""Stage ``vae_train``: train the latent autoencoder, set its scaling factor, score it."""

from __future__ import annotations

import logging
import math
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from echomotion.data import evenly_spaced
from echomotion.device import process_state
from echomotion.diffusion.discriminator import (
    VAEWithDiscriminator,
    build_discriminator,
    vae_gan_loss,
)
from echomotion.diffusion.losses import vae_loss
from echomotion.diffusion.lpips import load_lpips
from echomotion.diffusion.metrics import reconstruction_metrics
from echomotion.diffusion.vae import (
    build_vae,
    decode_latents,
    encode_frames,
    estimate_scaling_factor,
    frames_to_images,
)
from echomotion.media import save_png
from echomotion.params import Params
from echomotion.stage import finish_training
from echomotion.stores import videos as videos_store
from echomotion.stores.ragged import FrameRows, RaggedStore
from echomotion.tasks.vae_train.params import VAETrainParams
from echomotion.training.checkpoint import WEIGHTS_FILE, save_pretrained
from echomotion.training.fingerprint import fresh_checkpoints
from echomotion.training.loop import LossFn, TrainResult, train_section

logger = logging.getLogger(__name__)


def split_frames(store: RaggedStore, splits: tuple[str, ...]) -> FrameRows:
    """Every frame ``(N, H, W)`` uint8 of the store's videos in ``splits``, in store order
    (read on access, so workers share the store's frames rather than copy them)."""
    videos = np.flatnonzero(np.isin(store.table["split"].astype(str), splits))
    return store.rows_of(videos, "frames")


def spread_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` frames spread evenly over ``frames`` (all of them when fewer)."""
    return frames[evenly_spaced(len(frames), n)]


class FrameDataset(Dataset):
    """Single frames (an array, or :class:`FrameRows` of a mapped store). Item: ``image``
    ``(1, S, S)`` in [-1, 1], a random ``crop`` x ``crop`` window of the frame (the whole
    frame when ``crop`` is None)."""

    def __init__(self, frames: np.ndarray | FrameRows, crop: int | None = None):
        if crop is not None and crop > min(frames.shape[1:]):
            raise ValueError(f"crop {crop} is larger than the frames {frames.shape[1:]}")
        self.frames, self.crop = frames, crop

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frame = self.frames[index]  # (H, W)
        if self.crop is not None:
            top = int(torch.randint(0, frame.shape[0] - self.crop + 1, ()))
            left = int(torch.randint(0, frame.shape[1] - self.crop + 1, ()))
            frame = frame[top : top + self.crop, left : left + self.crop]
        return {"image": frames_to_images(np.ascontiguousarray(frame)[None])[0]}  # (1, S, S)


def train_vae(
    videos_path: str | Path,
    params: VAETrainParams,
    *,
    out_dir: str | Path,
    log_file: str | Path,
    seed: int,
    figure: str | Path | None = None,
) -> dict[str, float]:
    """Train the VAE on TRAIN frames, record its scaling factor in ``out_dir/model``;
    ``figure``: a PNG of VAL reconstructions (:func:`reconstruction_figure`).

    Returns the metrics: reconstruction ``psnr`` (dB) and ``ssim`` of VAL frames
    (NaN without VAL videos), ``scaling_factor``, ``steps``.
    """
    # 1. frames in memory
    store = RaggedStore(videos_path).load("frames")
    train_frames = split_frames(store, ("TRAIN",))
    if len(train_frames) == 0:
        raise ValueError(f"{videos_path}: no TRAIN video to train the VAE on")
    # 2. train (with LPIPS or the discriminator: the VAE inside a wrapper, model/ and
    # model_raw/ then rewritten as the plain VAE)
    torch.manual_seed(seed)
    vae = build_vae(params.model)
    model, loss_fn = vae_objective(vae, params)
    result = train_section(
        model,
        FrameDataset(train_frames, params.crop_size),
        loss_fn,
        params,
        out_dir=out_dir,
        seed=seed,
        log_file=log_file,
        name="vae",
    )
    if model is not vae and process_state().is_main_process:
        keep_plain_vae(result, params)
    # 3. scaling factor (1 / std of TRAIN latents), saved with the model
    vae.eval()
    sample = spread_frames(train_frames, params.scale_frames)
    scale = estimate_scaling_factor(vae, sample, params.encode_batch_size)
    vae.register_to_config(scaling_factor=scale)
    if process_state().is_main_process:
        save_pretrained(vae, result.model_dir)
    logger.info("scaling factor %.4f from %d TRAIN frames", scale, len(sample))
    # 4. reconstruction quality on VAL, and a figure of it
    val = spread_frames(split_frames(store, ("VAL",)), params.eval_frames)
    scores = (
        reconstruction_metrics(vae, val, params.encode_batch_size)
        if len(val)
        else {"psnr": math.nan, "ssim": math.nan}
    )
    if figure is not None and len(val) and process_state().is_main_process:
        save_png(reconstruction_figure(vae, spread_frames(val, 4)), figure)
    return {**scores, "scaling_factor": scale, "steps": result.step, "val_frames": len(val)}


def vae_objective(vae: AutoencoderKL, params: VAETrainParams) -> tuple[nn.Module, LossFn]:
    """The module the loop trains and its loss: ``vae`` and ``losses.vae_loss`` unless
    LPIPS or the discriminator is on, else a :class:`VAEWithDiscriminator` (the
    discriminator drawn from the global RNG after the VAE) and ``vae_gan_loss``."""
    loss = params.loss
    if loss.lpips_weight > 0 and loss.lpips_weights is None:
        logger.warning("lpips_weight %g without lpips_weights: LPIPS is off", loss.lpips_weight)
    if not loss.gan_or_lpips:
        return vae, partial(vae_loss, params=loss)
    discriminator = build_discriminator(loss) if loss.disc_weight > 0 else None
    lpips = load_lpips(loss.lpips_weights) if loss.lpips_active else None
    model = VAEWithDiscriminator(vae, discriminator, grad_accum=params.train.grad_accum)
    return model, partial(vae_gan_loss, params=loss, lpips=lpips)


def keep_plain_vae(result: TrainResult, params: VAETrainParams) -> None:
    """Leave ``model/`` to the caller's save of the plain VAE (the wrapper's file goes;
    the discriminator lives on in the checkpoints only) and rewrite ``model_raw/`` (EMA
    runs) as the plain VAE of the raw weights."""
    shutil.rmtree(result.model_dir, ignore_errors=True)
    raw = result.raw_model_dir
    if raw is None or not (raw / WEIGHTS_FILE).is_file():
        return
    state = load_file(raw / WEIGHTS_FILE)
    with torch.random.fork_rng(devices=[]):  # the copy's init must not shift later draws
        plain = build_vae(params.model)
    plain.load_state_dict({k.removeprefix("vae."): v for k, v in state.items() if k[:4] == "vae."})
    shutil.rmtree(raw)
    save_pretrained(plain, raw)


def reconstruction_figure(vae, frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """uint8 image: ``frames`` ``(N, H, W)`` in the top row, their round trip through the
    stored-latent path below, the absolute error x4 in the bottom row."""
    recon = decode_latents(vae, encode_frames(vae, frames))
    error = np.clip(np.abs(recon.astype(np.int16) - frames) * 4, 0, 255).astype(np.uint8)
    rows = []
    for images in (frames, recon, error):
        sep = np.full((images.shape[1], gap), 255, dtype=np.uint8)
        rows.append(np.concatenate([p for im in images for p in (im, sep)][:-1], axis=1))
    sep = np.full((gap, rows[0].shape[1]), 255, dtype=np.uint8)
    return np.concatenate([rows[0], sep, rows[1], sep, rows[2]])


OUT = "models/vae"


def run(params: Params) -> None:
    """The stage as dvc.yaml runs it: its inputs and outputs at their pipeline paths."""
    fresh_checkpoints("vae_train", f"{OUT}/checkpoints")
    metrics = train_vae(
        videos_store.PATH,
        params.vae_train,
        out_dir=OUT,
        log_file="plots/vae_train/train.tsv",
        figure="plots/vae_train/reconstruction.png",
        seed=params.vae_train.train.seed_or(params.shared.seed),
    )
    finish_training(params.vae_train, f"{OUT}/params_used.json", "metrics/vae.json", metrics)
