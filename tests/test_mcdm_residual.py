"""The residual MCDM (``mcdm_train.model.residual``): the UNet denoises a window's scaled
difference from its reference latent; training targets it, the pipeline maps it back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_mcdm_fidelity import (
    SIZE,
    TINY,
    D,
    batch,
    clips,
    tiny_pipeline,
    tiny_unet,
    write_stores,
)

from conftest import section
from echomotion.diffusion.conditioning import from_residual, to_residual
from echomotion.diffusion.loading import load_pipeline
from echomotion.diffusion.losses import build_scheduler, mcdm_loss
from echomotion.diffusion.params import (
    MCDMLossParams,
    MCDMModelParams,
    NoiseScheduleParams,
    VAEModelParams,
)
from echomotion.diffusion.pipeline import default_overlap
from echomotion.diffusion.vae import build_vae
from echomotion.tasks.mcdm_train.run import train_mcdm
from echomotion.training.params import TrainParams

pytestmark = pytest.mark.usefixtures("one_thread")


def test_to_and_from_residual_are_inverse():
    g = torch.Generator().manual_seed(0)
    latents, base = torch.randn(2, 5, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    residual = to_residual(latents, base, 4.0)
    assert torch.allclose(residual[:, 2], (latents[:, 2] - base) * 4.0)
    assert torch.allclose(from_residual(residual, base, 4.0), latents, atol=1e-6)


def test_residual_scale_is_one_over_the_rms_of_every_window_difference():
    data = clips([9, 12], n=4, stride=2)  # ramp latents: frame value = index + 1
    diffs = []
    for video in range(2):
        frames = data.latents[data.offsets[video] : data.offsets[video + 1]]
        for start in range(len(frames) - 6):  # every full window of span 7
            window = frames[start : start + 7 : 2].astype(np.float64)
            diffs.append(window[1:] - window[:1])
    expected = 1.0 / np.sqrt(np.mean(np.square(np.concatenate(diffs))))
    assert data.residual_scale() == pytest.approx(expected, rel=1e-12)
    short = clips([3], n=4, stride=2, short_videos="pad")  # one window: frames 0 and 2
    assert short.residual_scale() == pytest.approx(1.0 / 2.0)
    with pytest.raises(ValueError, match="do not change over time"):
        still = clips([9], n=4)
        still.latents = np.ones_like(still.latents)
        still.residual_scale()


def test_the_residual_loss_targets_the_velocity_of_the_scaled_difference():
    """An oracle that knows the scaled residual scores zero; one that knows the latents not."""
    unet, scheduler, data = tiny_unet(), build_scheduler(NoiseScheduleParams()), batch()
    scale = 3.0
    residual = to_residual(data["latents"], data["ref_latent"], scale)
    truth = {}

    def oracle(module, args, output):
        sample, t = args[0], args[1]
        alpha = scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1, 1)
        sigma = (1 - scheduler.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1, 1)
        x0 = truth["x0"]
        eps = (sample[:, :, :4] - alpha * x0) / sigma
        return (scheduler.get_velocity(x0, eps, t),)

    handle = unet.register_forward_hook(oracle)
    params = MCDMLossParams(cond_dropout=0.0)
    losses = {}
    with torch.no_grad():
        for name, x0 in (("residual", residual), ("latents", data["latents"])):
            truth["x0"] = x0
            torch.manual_seed(0)
            losses[name] = mcdm_loss(unet, data, scheduler, params, residual_scale=scale)[0]
    handle.remove()
    assert losses["residual"].item() == pytest.approx(0.0, abs=1e-8)
    assert losses["latents"].item() > 1e-3


def test_a_residual_pipeline_copies_the_reference_and_maps_every_window_back():
    pipe = tiny_pipeline(reference="window_start", residual_scale=4.0)
    reference = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    ref_latent = pipe.encode_reference(reference)
    seen = []

    def keep(_pipe, _step, _t, tensors):
        seen.append(tensors["latents"].clone())
        return {}

    out = pipe(reference, np.zeros((1, D), np.float32), num_frames=4, num_inference_steps=2,
               output_type="latent", generator=torch.Generator().manual_seed(0),
               callback_on_step_end=keep).frames  # fmt: skip
    assert torch.equal(out[:, 0], ref_latent)  # the reference frame, exactly
    last = seen[-1]  # residuals of the one window after its last step
    assert torch.allclose(out[:, 1:], from_residual(last, ref_latent, 4.0)[:, 1:], atol=1e-6)
    # a longer video: the later window's known frames are kept as they were generated
    long = pipe(reference, np.zeros((1, D), np.float32), num_frames=7, num_inference_steps=2,
                output_type="latent", generator=torch.Generator().manual_seed(0))  # fmt: skip
    long = long.frames
    assert long.shape[1] == 7 and torch.equal(long[:, 0], ref_latent)
    assert torch.equal(long[:, :4], out)  # the first window is the same draw


def test_residual_scale_defaults_to_none_and_must_be_positive():
    pipe = tiny_pipeline(reference="random")
    assert pipe.config.residual_scale is None
    with pytest.raises(ValueError, match="residual_scale must be positive"):
        tiny_pipeline(residual_scale=0.0)


def test_window_start_models_need_a_known_frame_in_every_later_window():
    pipe = tiny_pipeline(reference="window_start")
    assert default_overlap(4) == 1 and default_overlap(16) == 4 and default_overlap(1) == 0
    with pytest.raises(ValueError, match="window_overlap must be >= 1"):
        pipe(np.zeros((SIZE, SIZE), np.uint8), np.zeros((1, D), np.float32), num_frames=6,
             window_overlap=0, num_inference_steps=1)  # fmt: skip


def test_residual_training_saves_its_scale_with_the_pipeline(tmp_path):
    latents, features, motion = write_stores(tmp_path, [9, 8, 10], [40.0, 60.0, 70.0])
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8))
    vae.save_pretrained(tmp_path / "vae")
    params = section("mcdm_train",
        model=MCDMModelParams(**TINY, motion_dim=D, residual=True),
        train=TrainParams(steps=2, batch_size=2, lr=1e-3, checkpoint_every=2, log_every=1),
        frame_stride=2, window_anchor="any",  # random latents: no heart to find ED in
    )  # fmt: skip
    metrics = train_mcdm(latents, features, tmp_path / "vae", params, out_dir=tmp_path / "mcdm",
                         log_file=tmp_path / "train.tsv", seed=0)  # fmt: skip
    config = json.loads((tmp_path / "mcdm/pipeline/model_index.json").read_text())
    assert config["residual_scale"] == pytest.approx(metrics["residual_scale"])
    assert 0.1 < metrics["residual_scale"] < 10  # random unit latents: RMS of a difference ~1.4
    pipe = load_pipeline(tmp_path / "mcdm/pipeline", "ddpm")
    reference = np.full((SIZE, SIZE), 90, np.uint8)
    video = pipe(reference, torch.from_numpy(motion[:1]), num_inference_steps=2,
                 output_type="latent", generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(video.frames[:, 0], pipe.encode_reference(reference))
