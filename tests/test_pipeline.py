"""MotionConditionedVideoPipeline: end to end, save/load (also by plain diffusers in a fresh
interpreter), motion normalisation, output types, latents, callbacks, schedulers, guidance,
windows, MAFE."""

import json
import os
import subprocess
import sys

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
from echomotion.diffusion.loading import load_pipeline
from echomotion.diffusion.losses import build_scheduler
from echomotion.diffusion.params import MCDMModelParams, NoiseScheduleParams, VAEModelParams
from echomotion.diffusion.pipeline import (
    LOADER_MODULE,
    MotionConditionedVideoPipeline,
    window_starts,
)
from echomotion.diffusion.unet import build_unet, unet_predict
from echomotion.diffusion.vae import build_vae, encode_images, frames_to_images
from echomotion.mafe.model import MAFE
from echomotion.mafe.params import MAFEModelParams

D, WINDOW, SIZE = 16, 3, 32  # motion dim, training window, frame size (latents 4x4)
TINY_MAFE = MAFEModelParams(
    embed_dim=2, depths=(1, 1, 1), num_heads=(1, 1), window_size=4, motion_ratio=1, reid_dim=4
)

pytestmark = pytest.mark.usefixtures("one_thread")


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
        ({"motion": motion(2), "output_type": "mp4"}, "output_type"),
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


# ---- motion normalisation ----------------------------------------------------------------


def with_stats(pipe, **config) -> MotionConditionedVideoPipeline:
    """``pipe``'s components with random motion statistics (and ``config``), bar off."""
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(D, generator=generator).tolist()
    std = (torch.rand(D, generator=generator) + 0.5).tolist()
    out = MotionConditionedVideoPipeline(
        pipe.vae, pipe.unet, pipe.scheduler, mafe=pipe.mafe, motion_mean=mean, motion_std=std,
        **config,
    )  # fmt: skip
    out.set_progress_bar_config(disable=True)
    return out


def normalised(pipe, raw: torch.Tensor) -> torch.Tensor:
    return (raw - torch.tensor(pipe.config.motion_mean)) / torch.tensor(pipe.config.motion_std)


def motion_contexts(pipe, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(the motion ``(B, D)`` the UNet received at the first step, the latents)."""
    contexts = []
    hook = pipe.unet.register_forward_pre_hook(lambda _, args: contexts.append(args[2][:, 0]))
    try:
        out = run(pipe, output_type="latent", **kwargs)
    finally:
        hook.remove()
    return contexts[0], out


def test_raw_motion_is_normalised_with_the_config_statistics(pipe):
    normed = with_stats(pipe)
    raw = motion(2)
    context, out = motion_contexts(normed, reference=frames(2), motion=raw)
    torch.testing.assert_close(context, normalised(normed, raw), rtol=0, atol=0)
    already = normalised(normed, raw)
    again, out_again = motion_contexts(
        normed, reference=frames(2), motion=already, motion_normalized=True
    )
    assert torch.equal(again, already) and torch.equal(out_again, out)
    driving = frames(6)
    context, _ = motion_contexts(normed, reference=frames(1), driving_video=driving, ed=0, es=4)
    pair = torch.from_numpy(driving[[0, 4]]).float()[:, None] / 255.0
    with torch.no_grad():
        expected = normalised(normed, pipe.mafe.motion_vector(pair[:1], pair[1:]))
    torch.testing.assert_close(context, expected)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"motion_mean": [0.0] * D}, "both motion_mean and motion_std"),
        ({"motion_mean": [0.0] * 3, "motion_std": [1.0] * 3}, r"motion dim \(16\)"),
        ({"motion_mean": [0.0] * D, "motion_std": [0.0] * D}, "positive"),
    ],
)
def test_motion_statistics_are_checked(pipe, config, message):
    with pytest.raises(ValueError, match=message):
        MotionConditionedVideoPipeline(pipe.vae, pipe.unet, pipe.scheduler, **config)


def test_guidance_is_refused_for_a_model_trained_without_motion_dropout(pipe, tmp_path):
    """cond_dropout 0: the unconditional branch never trained, so guidance != 1 is refused,
    also after a save and load; guidance 1 runs, and so does a pipeline that does not know
    (an older folder, ``None``)."""
    no_dropout = MotionConditionedVideoPipeline(
        pipe.vae, pipe.unet, pipe.scheduler, cond_dropout=0.0
    )
    no_dropout.set_progress_bar_config(disable=True)
    no_dropout.save_pretrained(tmp_path)
    loaded = MotionConditionedVideoPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.cond_dropout == 0.0
    for p in (no_dropout, loaded):
        with pytest.raises(ValueError, match=r"guidance_scale 3.0 .*cond_dropout 0"):
            run(p, reference=frames(1), motion=motion(1), guidance_scale=3.0)
        assert run(p, reference=frames(1), motion=motion(1)).shape == (1, WINDOW, SIZE, SIZE)
    assert pipe.config.cond_dropout is None  # unknown: guidance allowed (other tests)
    with pytest.raises(ValueError, match="cond_dropout must be in"):
        MotionConditionedVideoPipeline(pipe.vae, pipe.unet, pipe.scheduler, cond_dropout=1.5)


def test_statistics_round_trip_and_load_pipeline_needs_them(pipe, tmp_path):
    normed = with_stats(pipe, frame_size=(SIZE, SIZE))
    normed.save_pretrained(tmp_path / "new")
    loaded = load_pipeline(tmp_path / "new", "ddim")
    assert loaded.config.motion_mean == normed.config.motion_mean
    assert loaded.config.motion_std == normed.config.motion_std
    assert loaded.config.frame_size == [SIZE, SIZE] and isinstance(loaded.mafe, PairMotion)
    bare = MotionConditionedVideoPipeline(pipe.vae, pipe.unet, pipe.scheduler)
    bare.save_pretrained(tmp_path / "old")  # as a folder saved with conditioning.json was
    with pytest.raises(ValueError, match=r"no motion_mean or frame_size.*run mcdm_train again"):
        load_pipeline(tmp_path / "old", "ddim")


# ---- plain diffusers loading ---------------------------------------------------------------

FRESH_LOAD = """
import sys
import numpy as np
import torch
from diffusers import DiffusionPipeline

results = {}
for name in sys.argv[1:]:
    pipe = DiffusionPipeline.from_pretrained(name, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    contexts = []
    pipe.unet.register_forward_pre_hook(lambda _, args: contexts.append(args[2][:, 0]))
    kwargs = {"reference": np.load("reference.npy"), "num_inference_steps": 2,
              "output_type": "latent", "generator": torch.Generator().manual_seed(0)}
    if pipe.mafe is None:
        kwargs["motion"] = torch.load("motion.pt")
    else:
        kwargs.update(driving_video=np.load("driving.npy"), ed=0, es=4)
    latents = pipe(**kwargs).frames
    cls = type(pipe)
    results[name] = {"class": f"{cls.__module__}.{cls.__name__}",
                     "mafe": type(pipe.mafe).__name__, "context": contexts[0], "latents": latents}
torch.save(results, "results.pt")
"""


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """A working folder outside the repo with two saved pipelines whose every component
    class lives in an installed package: ``bare`` and ``with_mafe`` (a tiny MAFE)."""
    tmp = tmp_path_factory.mktemp("portable")
    torch.manual_seed(0)
    mafe = MAFE.from_params(TINY_MAFE).eval()
    dim = mafe.motion_vector_dim
    unet = build_unet(
        MCDMModelParams(block_out_channels=(32, 32), motion_dim=dim, num_frames=WINDOW)
    )
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8))
    stats = torch.Generator().manual_seed(2)
    mean = torch.randn(dim, generator=stats).tolist()
    std = (torch.rand(dim, generator=stats) + 0.5).tolist()
    pipes = {}
    for name, extractor in (("bare", None), ("with_mafe", mafe)):
        pipes[name] = MotionConditionedVideoPipeline(
            vae.eval(), unet.eval(), build_scheduler(NoiseScheduleParams()), mafe=extractor,
            fps=25.0, motion_mean=mean, motion_std=std,
        )  # fmt: skip
    for name, saved in pipes.items():
        saved.set_progress_bar_config(disable=True)
        saved.save_pretrained(tmp / name)
    np.save(tmp / "reference.npy", frames(1)[0])
    np.save(tmp / "driving.npy", frames(6))
    raw = torch.randn(1, dim, generator=stats) * 3 + 1  # far from normalised
    torch.save(raw, tmp / "motion.pt")
    return {"tmp": tmp, "pipes": pipes}


def test_saved_folder_loads_with_plain_diffusers_in_a_fresh_interpreter(portable):
    tmp, pipes = portable["tmp"], portable["pipes"]
    index = json.loads((tmp / "with_mafe" / "model_index.json").read_text())
    assert index["_class_name"] == [LOADER_MODULE, "MotionConditionedVideoPipeline"]
    assert index["mafe"] == ["echomotion.mafe.model", "MAFE"]
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp / "modules"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    names = list(pipes)
    subprocess.run([sys.executable, "-c", FRESH_LOAD, *names], cwd=tmp, env=env, check=True)
    results = torch.load(tmp / "results.pt")
    raw = torch.load(tmp / "motion.pt")
    driving = np.load(tmp / "driving.npy")
    for name, pipe in pipes.items():
        got = results[name]
        assert got["class"] == "echomotion.diffusion.pipeline.MotionConditionedVideoPipeline"
        assert got["mafe"] == ("NoneType" if pipe.mafe is None else "MAFE")
        if pipe.mafe is None:
            expected = normalised(pipe, raw)
            kwargs = {"motion": raw}
        else:
            pair = torch.from_numpy(driving[[0, 4]]).float()[:, None] / 255.0
            with torch.no_grad():
                expected = normalised(pipe, pipe.mafe.motion_vector(pair[:1], pair[1:]))
            kwargs = {"driving_video": driving, "ed": 0, "es": 4}
        torch.testing.assert_close(got["context"], expected)
        here = run(pipe, reference=np.load(tmp / "reference.npy"), output_type="latent", **kwargs)
        # a few ulps apart at most: other memory, other summation order (see the round trip)
        torch.testing.assert_close(got["latents"], here, rtol=0, atol=1e-4)


def test_plain_diffusers_asks_before_running_the_folder_code(portable):
    from diffusers import DiffusionPipeline

    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(portable["tmp"] / "bare")


# ---- call options ------------------------------------------------------------------------


def test_output_types_hold_the_same_frames(pipe):
    kwargs = {"reference": frames(2), "motion": motion(2)}
    as_np = run(pipe, **kwargs)
    as_pt = run(pipe, output_type="pt", **kwargs)
    as_pil = run(pipe, output_type="pil", **kwargs)
    latents = run(pipe, output_type="latent", **kwargs)
    assert as_np.dtype == np.uint8 and as_np.shape == (2, WINDOW, SIZE, SIZE)
    assert as_pt.dtype == torch.uint8 and torch.equal(as_pt, torch.from_numpy(as_np))
    assert len(as_pil) == 2 and all(len(video) == WINDOW for video in as_pil)
    assert as_pil[1][2].mode == "L" and np.array_equal(np.asarray(as_pil[1][2]), as_np[1, 2])
    assert latents.shape == (2, WINDOW, 4, 4, 4) and latents.dtype == torch.float32


def test_latents_replace_the_drawn_noise(pipe):
    original = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(original.config)  # no noise in the steps
    try:
        kwargs = {"reference": frames(1), "motion": motion(1), "output_type": "latent"}
        drawn = run(pipe, **kwargs)
        noise = randn_tensor((1, WINDOW, 4, 4, 4), generator=torch.Generator().manual_seed(0))
        given = run(pipe, latents=noise, generator=torch.Generator().manual_seed(9), **kwargs)
        long_noise = torch.randn(1, 5, 4, 4, 4)
        long = [run(pipe, latents=long_noise, num_frames=5, window_overlap=1, **kwargs)
                for _ in range(2)]  # fmt: skip
        with pytest.raises(ValueError, match=r"latents must be \(1, 3, 4, 4, 4\), got \(1, 2"):
            run(pipe, latents=noise[:, :2], **kwargs)
    finally:
        pipe.scheduler = original
    torch.testing.assert_close(given, drawn, rtol=0, atol=0)
    torch.testing.assert_close(long[0], long[1], rtol=0, atol=0)


def test_callback_runs_after_every_step_and_can_replace_the_latents(pipe):
    seen = []

    def record(p, step, t, tensors):
        seen.append((step, int(t), tuple(tensors["latents"].shape)))
        return tensors

    kwargs = {"reference": frames(1), "motion": motion(1), "output_type": "latent"}
    out = run(pipe, num_frames=5, window_overlap=1, callback_on_step_end=record, **kwargs)
    assert torch.equal(out, run(pipe, num_frames=5, window_overlap=1, **kwargs))
    assert [step for step, _, _ in seen] == [0, 1, 2, 3]  # 2 windows x 2 steps
    assert {shape for _, _, shape in seen} == {(1, WINDOW, 4, 4, 4)}

    def zero_last(p, step, t, tensors):  # step 1 is the last of the one window
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 1 else {}

    assert not run(pipe, callback_on_step_end=zero_last, **kwargs).any()
    with pytest.raises(ValueError, match=r"\['noise'\] are not among \['latents'\]"):
        run(pipe, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise"],
            **kwargs)  # fmt: skip


def test_progress_bar_is_on_by_default(pipe, capsys):
    fresh = MotionConditionedVideoPipeline(pipe.vae, pipe.unet, pipe.scheduler)
    run(fresh, reference=frames(1), motion=motion(1), num_frames=5, window_overlap=1)
    assert "4/4" in capsys.readouterr().err  # one bar over 2 windows x 2 steps


def test_motion_tokens_round_trip_and_reach_the_unet(pipe, tmp_path):
    """A pipeline whose UNet reads the motion as 4 tokens saves and reloads that count, and
    its UNet gets them; a count that does not fit the UNet is refused."""
    torch.manual_seed(0)
    unet = build_unet(
        MCDMModelParams(
            block_out_channels=(32, 32), motion_dim=D, num_frames=WINDOW, motion_tokens=4
        )
    ).eval()
    tokens = MotionConditionedVideoPipeline(pipe.vae, unet, pipe.scheduler, motion_tokens=4)
    tokens.set_progress_bar_config(disable=True)
    assert tokens.motion_dim == D and unet.config.cross_attention_dim == D // 4 + 4
    tokens.save_pretrained(tmp_path)
    loaded = MotionConditionedVideoPipeline.from_pretrained(tmp_path)
    assert loaded.config.motion_tokens == 4 and loaded.motion_dim == D
    contexts = []
    unet.register_forward_pre_hook(lambda _, args: contexts.append(args[2]))
    video = run(tokens, reference=frames(2), motion=motion(2), guidance_scale=2.0)
    assert video.shape == (2, WINDOW, SIZE, SIZE)
    assert contexts[0].shape[1:] == (4, D // 4 + 4)
    assert pipe.config.motion_tokens == 1  # the default: one token
    with pytest.raises(ValueError, match=r"motion_tokens \(8\) does not fit"):
        MotionConditionedVideoPipeline(pipe.vae, unet, pipe.scheduler, motion_tokens=8)
