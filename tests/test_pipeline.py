"""MotionConditionedVideoPipeline: end to end, save/load, schedulers, guidance, windows, MAFE."""

import numpy as np
import pytest
import torch
from diffusers import (
    ConfigMixin,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    ModelMixin,
)
from diffusers.configuration_utils import register_to_config
from diffusers.utils.torch_utils import randn_tensor

from echomotion.diffusion.conditioning import added_time_ids
from echomotion.diffusion.losses import build_scheduler
from echomotion.diffusion.params import MCDMModelParams, NoiseScheduleParams, VAEModelParams
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline, window_starts
from echomotion.diffusion.unet import build_unet, unet_predict
from echomotion.diffusion.vae import build_vae, encode_images, frames_to_images

D, WINDOW, SIZE = 16, 3, 32  # motion dim, training window, frame size (latents 4x4)


class PairMotion(ModelMixin, ConfigMixin):
    """Stand-in MAFE: a motion vector from two frame statistics."""

    @register_to_config
    def __init__(self, dim: int = D):
        super().__init__()
        self.proj = torch.nn.Linear(2, dim)

    def motion_vector(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        stats = torch.stack([img0.mean((1, 2, 3)), (img1 - img0).abs().mean((1, 2, 3))], 1)
        return self.proj(stats)  # (B, D)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8))
    unet = build_unet(MCDMModelParams(block_out_channels=(32, 32), motion_dim=D, num_frames=WINDOW))
    pipeline = MotionConditionedVideoPipeline(
        vae=vae.eval(),
        unet=unet.eval(),
        scheduler=build_scheduler(NoiseScheduleParams()),
        mafe=PairMotion().eval(),
        fps=25.0,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def frames(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, SIZE, SIZE), dtype=np.uint8)


def motion(n: int) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(n))


def run(pipe, **kwargs):
    kwargs = {"num_inference_steps": 2, "generator": torch.Generator().manual_seed(0), **kwargs}
    return pipe(**kwargs).frames


def test_end_to_end_gives_uint8_videos(pipe):
    video = run(pipe, reference=frames(2), motion=motion(2), guidance_scale=2.0)
    assert isinstance(video, np.ndarray) and video.dtype == np.uint8
    assert video.shape == (2, WINDOW, SIZE, SIZE)


def test_save_load_round_trip_is_identical(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = MotionConditionedVideoPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.fps == 25.0 and isinstance(loaded.mafe, PairMotion)
    torch.testing.assert_close(loaded.mafe.proj.weight, pipe.mafe.proj.weight)
    assert loaded.scheduler.config.prediction_type == "v_prediction"
    kwargs = {"reference": frames(1), "motion": motion(1), "output_type": "latent"}
    before, after = run(pipe, **kwargs), run(loaded, **kwargs)
    # Not bit-equal by design: the loaded weights are equal, but they sit in other memory
    # (safetensors buffers, other alignment), so oneDNN may block and sum the convolutions
    # in another order; each float32 op then differs by a few ulps, compounded over the
    # UNet's layers and the sampler's steps (2.8e-6 seen with diffusers 0.42.1). A wrong
    # weight, config or scheduler would move the latents by orders of magnitude more.
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(after, before, rtol=0, atol=2**6 * eps * float(before.abs().max()))


def test_pipeline_without_mafe(pipe, tmp_path):
    bare = MotionConditionedVideoPipeline(vae=pipe.vae, unet=pipe.unet, scheduler=pipe.scheduler)
    bare.save_pretrained(tmp_path)
    loaded = MotionConditionedVideoPipeline.from_pretrained(tmp_path)
    assert loaded.mafe is None and loaded.config.fps is None
    with pytest.raises(ValueError, match="needs a pipeline with a `mafe`"):
        loaded(reference=frames(1), driving_video=frames(4), ed=0, es=2)


@pytest.mark.parametrize(
    "scheduler_cls", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler]
)
def test_scheduler_swap(pipe, scheduler_cls):
    original = pipe.scheduler
    pipe.scheduler = scheduler_cls.from_config(original.config)
    try:
        assert pipe.scheduler.config.prediction_type == "v_prediction"
        video = run(pipe, reference=frames(1), motion=motion(1), num_inference_steps=3)
    finally:
        pipe.scheduler = original
    assert video.shape == (1, WINDOW, SIZE, SIZE) and video.dtype == np.uint8


def manual_sample(pipe, reference, motion_vec, guidance_scale):
    """Two deterministic DDIM steps written out by hand, with explicit guidance."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    ref = encode_images(pipe.vae, frames_to_images(reference))
    generator = torch.Generator().manual_seed(0)
    latents = randn_tensor((1, WINDOW, 4, 4, 4), generator=generator) * scheduler.init_noise_sigma
    fps, zero = torch.tensor([25.0]), torch.zeros(1)
    scheduler.set_timesteps(2)
    for t in scheduler.timesteps:
        ids = added_time_ids(fps, zero, zero)
        v = unet_predict(pipe.unet, latents, ref, motion_vec, ids, t)
        if guidance_scale != 1.0:
            null_ids = added_time_ids(fps, zero, torch.ones(1))
            v_null = unet_predict(
                pipe.unet, latents, ref, torch.zeros_like(motion_vec), null_ids, t
            )
            v = v_null + guidance_scale * (v - v_null)
        latents = scheduler.step(v, t, latents).prev_sample
    return latents


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_guidance_matches_manual_computation(pipe, guidance_scale):
    reference, motion_vec = frames(1), motion(1)
    original = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(original.config)
    batch_sizes = []
    hook = pipe.unet.register_forward_pre_hook(lambda _, args: batch_sizes.append(len(args[0])))
    try:
        out = run(pipe, reference=reference, motion=motion_vec, output_type="latent",
                  guidance_scale=guidance_scale)  # fmt: skip
    finally:
        pipe.scheduler = original
        hook.remove()
    with torch.no_grad():
        expected = manual_sample(pipe, reference, motion_vec, guidance_scale)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert batch_sizes == [1 if guidance_scale == 1.0 else 2] * 2  # one UNet call per step


def test_window_stitching_length_and_kept_frames(pipe):
    kwargs = {"reference": frames(1), "motion": motion(1), "output_type": "latent"}
    single = run(pipe, **kwargs)
    assert window_starts(7, WINDOW, 1) == [0, 2, 4]
    long = run(pipe, num_frames=7, window_overlap=1, **kwargs)
    assert long.shape == (1, 7, 4, 4, 4)
    torch.testing.assert_close(long[:, :WINDOW], single)  # later windows only append frames
    video = run(pipe, reference=frames(1), motion=motion(1), num_frames=5)
    assert video.shape == (1, 5, SIZE, SIZE) and video.dtype == np.uint8


def test_driving_video_motion_goes_through_mafe(pipe):
    driving = frames(6)
    contexts = []
    hook = pipe.unet.register_forward_pre_hook(lambda _, args: contexts.append(args[2]))
    try:
        video = run(pipe, reference=frames(2), driving_video=driving, ed=0, es=4)
    finally:
        hook.remove()
    assert video.shape == (2, WINDOW, SIZE, SIZE)
    pair = torch.from_numpy(driving[[0, 4]]).float()[:, None] / 255.0
    with torch.no_grad():
        expected = pipe.mafe.motion_vector(pair[:1], pair[1:]).expand(2, -1)
    torch.testing.assert_close(contexts[0][:, 0], expected)


def test_reference_latent_input_skips_the_vae(pipe):
    latent = encode_images(pipe.vae, frames_to_images(frames(1)))
    from_latent = run(pipe, reference=latent, motion=motion(1), output_type="latent")
    from_frame = run(pipe, reference=frames(1), motion=motion(1), output_type="latent")
    torch.testing.assert_close(from_latent, from_frame)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"motion": torch.zeros(1, D + 1)}, r"motion must be \(2 or 1, 16\), got \(1, 17\)"),
        ({"motion": motion(2), "driving_video": frames(4)}, "exactly one"),
        ({"driving_video": frames(4), "ed": 0, "es": 9}, r"es \(9\)"),
        ({"motion": motion(2), "window_overlap": WINDOW}, "window_overlap"),
        ({"motion": motion(2), "output_type": "pil"}, "output_type"),
    ],
)
def test_check_inputs_names_the_bad_value(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(reference=frames(2), **kwargs)


def test_window_start_reference_pins_frame_0_and_follows_the_windows(pipe):
    """Trained with reference = window start: the video starts at the reference latent and
    each later window is conditioned on its own first (known) frame."""
    reference = frames(1)
    latent = encode_images(pipe.vae, frames_to_images(reference))
    refs = []
    hook = pipe.unet.register_forward_pre_hook(lambda _, args: refs.append(args[0][:, 0, 4:]))
    pipe.register_to_config(reference="window_start")
    try:
        video = run(pipe, reference=reference, motion=motion(1), num_frames=5,
                    window_overlap=1, output_type="latent")  # fmt: skip
    finally:
        pipe.register_to_config(reference="random")
        hook.remove()
    torch.testing.assert_close(video[:, 0], latent)  # pinned as a known frame
    # 2 steps per window: windows [0, 3) and [2, 5); the second conditions on frame 2
    assert window_starts(5, WINDOW, 1) == [0, 2]
    torch.testing.assert_close(refs[0], latent.expand_as(refs[0]))
    torch.testing.assert_close(refs[2], video[:, 2])
    with pytest.raises(ValueError, match="reference must be"):
        MotionConditionedVideoPipeline(pipe.vae, pipe.unet, pipe.scheduler, reference="first")
