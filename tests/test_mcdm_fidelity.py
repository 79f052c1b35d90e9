"""Options that follow the official LabelfreeMCDM code: sampler clipping, padded
random-phase windows with a masked loss, zero time ids, raw motion, EF+motion conditioning
(README fidelity table)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from conftest import REPO, section
from echomotion.cli.generate import InputError, build_parser, check_ef
from echomotion.cli.preset import load_preset
from echomotion.diffusion.conditioning import condition_time_ids, ef_token
from echomotion.diffusion.loading import MotionNormalizer, load_pipeline, sampling_scheduler
from echomotion.diffusion.losses import build_scheduler, mcdm_loss, per_sample_mse
from echomotion.diffusion.params import (
    MCDMLossParams,
    MCDMModelParams,
    NoiseScheduleParams,
    VAEModelParams,
)
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline
from echomotion.diffusion.unet import build_unet
from echomotion.diffusion.vae import build_vae
from echomotion.params import validate_params
from echomotion.stores.ragged import RaggedStore, RaggedStoreWriter
from echomotion.tasks.mcdm_train.run import LatentClipDataset, load_clip_data, train_mcdm
from echomotion.tasks.sample.run import driver_ef
from echomotion.training.params import TrainParams

pytestmark = pytest.mark.usefixtures("one_thread")

D, SIZE = 6, 32  # motion dim, frame size (latents 4x4 with the 4-level VAE)
TINY = {"block_out_channels": (32, 32), "num_frames": 4, "addition_time_embed_dim": 8}


def tiny_unet(**model) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(MCDMModelParams(**(TINY | {"motion_dim": D} | model)))


def tiny_pipeline(schedule: NoiseScheduleParams | None = None, **config):
    torch.manual_seed(0)
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8)).eval()
    ef = config.get("condition_ef", False)
    pipe = MotionConditionedVideoPipeline(
        vae=vae,
        unet=tiny_unet(**{"condition_ef": ef} | _heart_rate_ids(config)).eval(),
        scheduler=build_scheduler(schedule or NoiseScheduleParams()),
        fps=12.5,
        **config,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _heart_rate_ids(config: dict) -> dict:
    """The UNet option a pipeline ``config`` with ``time_ids="heart_rate"`` needs (4 ids)."""
    return {"time_ids": "heart_rate"} if config.get("time_ids") == "heart_rate" else {}


def spy_time_ids(unet: torch.nn.Module) -> list[torch.Tensor]:
    """The ``added_time_ids`` and context of every UNet call, recorded by a forward hook."""
    calls = []

    def hook(_module, args, kwargs):
        calls.append((args[3].clone(), args[2].clone()))

    unet.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def batch(b: int = 2, t: int = 4, dim: int = D) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "latents": torch.randn(b, t, 4, 6, 6, generator=g),
        "ref_latent": torch.randn(b, 4, 6, 6, generator=g),
        "motion": torch.randn(b, dim, generator=g),
        "fps": torch.tensor([12.5, 25.0])[:b],
    }


# ---- 1. sampler clipping ----------------------------------------------------------------


def test_clip_sample_bounds_the_predicted_clean_latent_of_ddpm_and_ddim():
    clipped = build_scheduler(NoiseScheduleParams(clip_sample=True, clip_sample_range=4.0))
    plain = build_scheduler(NoiseScheduleParams())
    sample, output = torch.zeros(1, 4, 2, 2), torch.full((1, 4, 2, 2), 50.0)  # huge v
    for name in ("ddpm", "ddim"):
        scheduler = sampling_scheduler(clipped.config, name)
        scheduler.set_timesteps(10)
        t = scheduler.timesteps[0]
        x0 = scheduler.step(output, t, sample).pred_original_sample
        assert x0.abs().max().item() == pytest.approx(4.0)
        free = sampling_scheduler(plain.config, name)
        free.set_timesteps(10)
        assert free.step(output, t, sample).pred_original_sample.abs().max() > 4.0


def test_clip_sample_survives_the_saved_pipeline_and_dpmsolver_says_it_cannot(tmp_path, caplog):
    pipe = tiny_pipeline(
        NoiseScheduleParams(clip_sample=True, clip_sample_range=4.0),
        motion_mean=[0.0] * D, motion_std=[1.0] * D, frame_size=[SIZE, SIZE],
    )  # fmt: skip
    pipe.save_pretrained(tmp_path / "pipe")
    for name in ("ddpm", "ddim"):
        config = load_pipeline(tmp_path / "pipe", name).scheduler.config
        assert (config.clip_sample, config.clip_sample_range) == (True, 4.0)
    with caplog.at_level(logging.WARNING):
        load_pipeline(tmp_path / "pipe", "dpmsolver++")
    assert "dpmsolver++ lacks" in caplog.text


# ---- 2. windows: padding and random phase, masked loss ----------------------------------


def ramp(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Latents whose value is the frame's index within its video, and the offsets."""
    frames = np.concatenate([np.arange(n) for n in lengths]).astype(np.float32) + 1.0
    return frames[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32), np.cumsum([0, *lengths])


def clips(lengths, n=4, stride=1, **kwargs) -> LatentClipDataset:
    latents, offsets = ramp(lengths)
    videos = np.arange(len(lengths))
    motion, fps = torch.zeros(len(lengths), 3), np.full(len(lengths), 25.0)
    return LatentClipDataset(latents, offsets, videos, motion, fps, n, stride, **kwargs)


def old_item(data: LatentClipDataset, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The window and reference that the code before these options drew (same draws)."""
    first, end = int(data.offsets[index]), int(data.offsets[index + 1])
    span = (data.n_frames - 1) * data.stride + 1
    start = first + int(torch.randint(0, end - first - span + 1, ()))
    ref = first + int(torch.randint(0, end - first, ()))
    ref = start if data.reference == "window_start" else ref
    window = torch.from_numpy(data.latents[start : start + span : data.stride]).float()
    return window, torch.from_numpy(data.latents[ref]).float()


@pytest.mark.parametrize("reference", ["window_start", "random"])
def test_default_windows_draw_what_they_drew_before(reference):
    data = clips([12, 30, 9], stride=2, reference=reference)
    for seed in range(20):
        torch.manual_seed(seed)
        item = data[seed % 3]
        torch.manual_seed(seed)
        window, ref = old_item(data, seed % 3)
        assert torch.equal(item["latents"], window) and torch.equal(item["ref_latent"], ref)
        assert "frame_mask" not in item


def test_short_videos_are_padded_and_masked_instead_of_refused():
    with pytest.raises(ValueError, match="are < 7 frames"):
        clips([5, 12], stride=2)
    data = clips([5, 12], stride=2, short_videos="pad")
    item = data[0]  # 5 frames, stride 2: frames 0, 2, 4, then one zero frame
    assert item["latents"][:, 0, 0, 0].tolist() == [1.0, 3.0, 5.0, 0.0]
    assert item["frame_mask"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert item["ref_latent"][0, 0, 0] == 1.0  # window_start: the first real frame
    full = data[1]
    assert full["frame_mask"].tolist() == [1.0] * 4 and (full["latents"].diff(dim=0) == 2).all()


def test_random_phase_draws_every_phase_and_keeps_full_windows_when_dropping():
    data = clips([12], stride=3, random_phase=True)  # span 10: starts 0..2
    phases = set()
    for seed in range(60):
        torch.manual_seed(seed)
        frames = data[0]["latents"][:, 0, 0, 0] - 1
        assert len(frames) == 4 and (frames.diff() == 3).all() and frames[-1] < 12
        phases.add(int(frames[0]) % 3)
    assert phases == {0, 1, 2}


def test_random_phase_with_padding_pads_windows_that_run_past_the_end():
    data = clips([11], stride=3, random_phase=True, short_videos="pad")  # phase 2: 2, 5, 8
    masks = set()
    for seed in range(60):
        torch.manual_seed(seed)
        item = data[0]
        real = int(item["frame_mask"].sum())
        masks.add(real)
        frames = item["latents"][:real, 0, 0, 0] - 1
        assert (frames.diff() == 3).all() and (item["latents"][real:] == 0).all()
    assert masks == {3, 4}


def test_random_phase_at_stride_one_draws_what_the_default_draws():
    plain, phased = clips([20], n=5), clips([20], n=5, random_phase=True)
    for seed in range(10):
        torch.manual_seed(seed)
        a = plain[0]
        torch.manual_seed(seed)
        assert torch.equal(a["latents"], phased[0]["latents"])


def test_anchored_windows_start_at_an_anchor_and_videos_without_one_draw_as_before():
    data = clips([30, 20], stride=2, anchors=[np.array([3, 11]), np.zeros(0, np.int64)])
    starts = set()
    for seed in range(40):
        torch.manual_seed(seed)
        item = data[0]
        frames = item["latents"][:, 0, 0, 0] - 1
        starts.add(int(frames[0]))
        assert (frames.diff() == 2).all() and item["ref_latent"][0, 0, 0] - 1 == frames[0]
    assert starts == {3, 11}
    plain = clips([30, 20], stride=2)
    for seed in range(10):  # no anchor: the uniform draw, unchanged
        torch.manual_seed(seed)
        a = plain[1]
        torch.manual_seed(seed)
        assert torch.equal(a["latents"], data[1]["latents"])


def test_anchors_that_leave_no_full_window_or_meet_a_phase_draw_are_refused():
    with pytest.raises(ValueError, match="leave no full 7-frame window"):
        clips([12], stride=2, anchors=[np.array([6])])
    with pytest.raises(ValueError, match="random_phase"):
        clips([12], stride=2, anchors=[np.array([0])], random_phase=True)
    with pytest.raises(ValueError, match="1 videos, 2 anchor lists"):
        clips([12], stride=2, anchors=[np.array([0]), np.array([0])])


def test_ed_windows_need_the_window_start_reference_and_no_phase_draw():
    section("mcdm_train", window_anchor="ed")  # the default's reference and phase
    with pytest.raises(ValueError, match="set random_phase false"):
        section("mcdm_train", window_anchor="ed", random_phase=True)
    with pytest.raises(ValueError, match="set reference 'window_start'"):
        section("mcdm_train", window_anchor="ed", reference="random")
    assert tiny_pipeline(window_anchor="ed").config.window_anchor == "ed"
    assert tiny_pipeline().config.window_anchor == "any"
    with pytest.raises(ValueError, match="window_anchor must be one of"):
        tiny_pipeline(window_anchor="es")


def test_the_masked_loss_averages_over_real_frames_only():
    pred, target = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    plain = per_sample_mse(pred, target)
    assert torch.equal(plain, (pred - target).pow(2).flatten(1).mean(1))
    assert torch.allclose(per_sample_mse(pred, target, torch.ones(2, 4)), plain)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    changed = target.clone()
    changed[0, 2:] += 100.0  # padded frames: out of the loss
    masked = per_sample_mse(pred, changed, mask)
    assert masked[0] == pytest.approx((pred[0, :2] - target[0, :2]).pow(2).mean().item())
    assert masked[1] == pytest.approx(plain[1].item())


def test_mcdm_loss_takes_the_frame_mask():
    unet, scheduler = tiny_unet(), build_scheduler(NoiseScheduleParams())
    losses = {}
    for name, mask in {"none": None, "ones": torch.ones(2, 4), "half": torch.ones(2, 4)}.items():
        data = batch()
        if mask is not None:
            data["frame_mask"] = mask
        if name == "half":
            data["frame_mask"][:, 2:] = 0.0
        torch.manual_seed(1)
        with torch.no_grad():
            losses[name] = mcdm_loss(unet, data, scheduler, MCDMLossParams())[0].item()
    assert losses["ones"] == pytest.approx(losses["none"], rel=1e-5)
    assert losses["half"] != pytest.approx(losses["none"], rel=1e-3)
    with pytest.raises(ValueError, match="frame_mask must be"):
        mcdm_loss(unet, batch() | {"frame_mask": torch.ones(2, 3)}, scheduler, MCDMLossParams())


# ---- 3. zero time ids -------------------------------------------------------------------


def test_zero_time_ids_in_training():
    unet, scheduler = tiny_unet(time_ids="zeros"), build_scheduler(NoiseScheduleParams())
    calls = spy_time_ids(unet)
    params = MCDMLossParams(cond_dropout=1.0, ref_noise_aug=0.5)
    with torch.no_grad():
        mcdm_loss(unet, batch(), scheduler, params, time_ids="zeros")
        mcdm_loss(unet, batch(), scheduler, params)
    (zeros, _), (signals, _) = calls
    assert zeros.shape == signals.shape == (2, 3) and not zeros.any()
    assert signals[:, 0].tolist() == [12.5, 25.0] and (signals[:, 2] == 1).all()
    with pytest.raises(ValueError, match="time_ids must be"):
        condition_time_ids("fps", torch.zeros(1), torch.zeros(1), torch.zeros(1))


def test_heart_rate_time_id_in_training():
    unet, scheduler = tiny_unet(time_ids="heart_rate"), build_scheduler(NoiseScheduleParams())
    assert unet.config.projection_class_embeddings_input_dim == 4 * TINY["addition_time_embed_dim"]
    calls = spy_time_ids(unet)
    params = MCDMLossParams(cond_dropout=1.0)
    rates = {"heart_rate": torch.tensor([60.0, 95.0])}
    with torch.no_grad():
        mcdm_loss(unet, batch() | rates, scheduler, params, time_ids="heart_rate")
    ((ids, _),) = calls
    assert ids.tolist() == [[12.5, 0.0, 1.0, 60.0], [25.0, 0.0, 1.0, 95.0]]  # kept when dropped
    with pytest.raises(ValueError, match="needs each sample's heart rate"):
        mcdm_loss(unet, batch(), scheduler, params, time_ids="heart_rate")


def test_a_heart_rate_pipeline_feeds_the_given_or_its_training_heart_rate(tmp_path):
    pipe = tiny_pipeline(time_ids="heart_rate", heart_rate=72.0)
    pipe.save_pretrained(tmp_path / "pipe")
    pipe = MotionConditionedVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.config.heart_rate == 72.0
    calls = spy_time_ids(pipe.unet)
    refs = np.zeros((2, SIZE, SIZE), np.uint8)
    common = {"motion": torch.ones(1, D), "num_inference_steps": 1, "output_type": "latent"}
    pipe(reference=refs, guidance_scale=2.0, heart_rate=[50.0, 100.0], **common)
    pipe(reference=refs, **common)  # the training median
    given, default = calls[0][0], calls[1][0]
    assert given[:, 3].tolist() == [50.0, 100.0, 50.0, 100.0]  # [uncond, cond]: both branches
    assert given[:, 2].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert default[:, 3].tolist() == [72.0, 72.0]
    for bad in (0.0, [60.0, 70.0, 80.0]):
        with pytest.raises(ValueError, match="heart_rate must be 1 or 2 positive"):
            pipe(reference=refs, heart_rate=bad, **common)
    with pytest.raises(ValueError, match="pass `heart_rate`"):
        tiny_pipeline(time_ids="heart_rate")(reference=refs, **common)
    with pytest.raises(ValueError, match="trained with time_ids 'signals'"):
        tiny_pipeline()(reference=refs, heart_rate=60.0, **common)
    with pytest.raises(ValueError, match="heart_rate must be positive"):
        tiny_pipeline(time_ids="heart_rate", heart_rate=-1.0)


@pytest.mark.parametrize("time_ids", ["signals", "zeros"])
def test_the_pipeline_feeds_the_time_ids_it_was_trained_with(time_ids, tmp_path):
    pipe = tiny_pipeline(time_ids=time_ids)
    pipe.save_pretrained(tmp_path / "pipe")
    pipe = MotionConditionedVideoPipeline.from_pretrained(tmp_path / "pipe")
    calls = spy_time_ids(pipe.unet)
    pipe(reference=np.zeros((SIZE, SIZE), np.uint8), motion=torch.ones(1, D), guidance_scale=2.0,
         num_inference_steps=1, noise_aug_strength=0.1, output_type="latent")  # fmt: skip
    ids = calls[0][0]  # (2, 3): [uncond, cond]
    if time_ids == "zeros":
        assert not ids.any()
    else:
        assert torch.allclose(ids, torch.tensor([[12.5, 0.1, 1.0], [12.5, 0.1, 0.0]]))
    with pytest.raises(ValueError, match="time_ids must be one of"):
        tiny_pipeline(time_ids="none")


# ---- 4. raw motion ----------------------------------------------------------------------


def test_identity_statistics_use_the_motion_raw_bit_for_bit():
    raw = torch.randn(3, D) * 1e3
    assert torch.equal(MotionNormalizer.identity(D, (SIZE, SIZE))(raw), raw)


# ---- 5. EF + motion ---------------------------------------------------------------------


def test_the_ef_token_puts_ef_over_100_first():
    motion = torch.randn(2, D)
    token = ef_token(motion, torch.tensor([55.0, 30.0]))
    assert token.shape == (2, D + 1) and token[:, 0].tolist() == pytest.approx([0.55, 0.30])
    assert torch.equal(token[:, 1:], motion)
    assert MCDMModelParams(motion_dim=D, condition_ef=True).context_dim == D + 1


def test_an_ef_pipeline_needs_ef_and_conditions_on_it(tmp_path):
    pipe = tiny_pipeline(condition_ef=True, motion_mean=[1.0] * D, motion_std=[2.0] * D)
    assert pipe.unet.config.cross_attention_dim == D + 1 and pipe.motion_dim == D
    pipe.save_pretrained(tmp_path / "pipe")
    pipe = MotionConditionedVideoPipeline.from_pretrained(tmp_path / "pipe")
    calls = spy_time_ids(pipe.unet)
    refs, raw = np.zeros((2, SIZE, SIZE), np.uint8), torch.full((1, D), 3.0)
    with pytest.raises(ValueError, match="pass `ef`"):
        pipe(reference=refs, motion=raw, num_inference_steps=1)
    with pytest.raises(ValueError, match="ef must be 1 or 2"):
        pipe(reference=refs, motion=raw, ef=[50.0, 60.0, 70.0], num_inference_steps=1)
    pipe(reference=refs, motion=raw, ef=[50.0, 60.0], num_inference_steps=1, output_type="latent")
    context = calls[0][1]  # (B, 1, D + 1)
    assert context[:, 0, 0].tolist() == pytest.approx([0.5, 0.6])
    assert (context[:, 0, 1:] == 1.0).all()  # (3 - 1) / 2: normalised after EF is split off
    plain = tiny_pipeline()
    with pytest.raises(ValueError, match="trained without EF"):
        plain(reference=refs, motion=torch.ones(1, D), ef=50.0, num_inference_steps=1)


def write_stores(tmp_path, lengths, efs) -> tuple:
    """A latents store (4x4 latents of 32x32 frames) and a features store with EF labels."""
    rng = np.random.default_rng(0)
    latents, features = tmp_path / "latents.zarr", tmp_path / "features.zarr"
    attrs = {"scaling_factor": 1.0, "frame_size": [SIZE, SIZE]}
    with RaggedStoreWriter(latents, {"latents": ((4, 4, 4), "float16")}, attrs=attrs) as w:
        for i, n in enumerate(lengths):
            frames = rng.standard_normal((n, 4, 4, 4)).astype(np.float16)
            w.append({"latents": frames}, file_name=f"v{i}", video=i, split="TRAIN", fps=25.0)
    motion = rng.standard_normal((len(lengths), D)).astype(np.float32) * 5 + 2
    stats = {"motion_mean": motion.mean(0).tolist(), "motion_std": motion.std(0).tolist()}
    attrs = {"motion_dim": D, "appearance_dim": 2, "schema": {}} | stats
    arrays = {"motion": ((1, D), "float32"), "appearance": ((1, 2), "float32")}
    with RaggedStoreWriter(features, arrays, attrs=attrs) as w:
        for i, ef in enumerate(efs):
            w.append({"motion": motion[i][None, None], "appearance": np.zeros((1, 1, 2))},
                     file_name=f"v{i}", video=i, split="TRAIN", ef=ef)  # fmt: skip
    return latents, features, motion


def test_clip_data_raw_motion_ef_labels_and_short_videos(tmp_path, caplog):
    latents, features, motion = write_stores(tmp_path, [9, 3, 8, 10], [40.0, 50.0, np.nan, 70.0])
    default = load_clip_data(latents, features, 4, stride=2)  # span 7: video 1 left out
    assert default.dataset.videos.tolist() == [0, 2, 3]
    normalised = (motion[[0, 2, 3]] - motion.mean(0)) / motion.std(0)
    assert torch.allclose(default.dataset.motion, torch.from_numpy(normalised), atol=1e-5)
    with caplog.at_level(logging.WARNING):
        data = load_clip_data(latents, features, 4, stride=2, short_videos="pad",
                              normalize_motion=False, condition_ef=True)  # fmt: skip
    assert "['v2']" in caplog.text  # no EF: left out and named
    assert data.dataset.videos.tolist() == [0, 1, 3]
    token = data.dataset.motion
    assert token[:, 0].tolist() == pytest.approx([0.4, 0.5, 0.7])
    assert torch.equal(token[:, 1:], torch.from_numpy(motion[[0, 1, 3]]))
    assert data.normalizer.mean.tolist() == [0.0] * D and data.normalizer.std.tolist() == [1.0] * D
    short = data.dataset[1]
    assert short["frame_mask"].tolist() == [1.0, 1.0, 0.0, 0.0]
    latents, features, _ = write_stores(tmp_path / "unlabelled", [9, 9], [np.nan, np.nan])
    with pytest.raises(ValueError, match="condition_ef needs EF labels"):
        load_clip_data(latents, features, 4, condition_ef=True)


def test_training_with_every_official_option_saves_a_pipeline_that_samples(tmp_path):
    latents, features, motion = write_stores(tmp_path, [9, 3, 8, 10], [40.0, 50.0, 60.0, 70.0])
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8))
    vae.save_pretrained(tmp_path / "vae")
    params = section("mcdm_train",
        model=MCDMModelParams(**TINY, motion_dim=D, time_ids="zeros", condition_ef=True),
        schedule=NoiseScheduleParams(clip_sample=True, clip_sample_range=4.0),
        train=TrainParams(steps=2, batch_size=2, lr=1e-3, checkpoint_every=2, log_every=1),
        frame_stride=2, short_videos="pad", random_phase=True, normalize_motion=False,
        window_anchor="any",
    )  # fmt: skip
    metrics = train_mcdm(latents, features, tmp_path / "vae", params, out_dir=tmp_path / "mcdm",
                         log_file=tmp_path / "train.tsv", seed=0)  # fmt: skip
    assert metrics["train_videos"] == 4 and metrics["steps"] == 2
    config = json.loads((tmp_path / "mcdm/pipeline/model_index.json").read_text())
    assert (config["time_ids"], config["condition_ef"]) == ("zeros", True)
    assert config["motion_mean"] == [0.0] * D and config["motion_std"] == [1.0] * D
    pipe = load_pipeline(tmp_path / "mcdm/pipeline", "ddpm")
    assert pipe.scheduler.config.clip_sample and pipe.unet.config.cross_attention_dim == D + 1
    video = pipe(
        reference=np.zeros((SIZE, SIZE), np.uint8),
        motion=torch.from_numpy(motion[:1]),
        ef=55.0,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert video.shape == (1, 4, SIZE, SIZE)


def test_sample_conditions_on_the_drivers_ef_only_for_an_ef_pipeline(tmp_path):
    _, features, _ = write_stores(tmp_path, [9, 9], [45.0, np.nan])

    store = RaggedStore(features)
    assert driver_ef(tiny_pipeline(), store, 0) is None
    ef_pipe = tiny_pipeline(condition_ef=True)
    assert driver_ef(ef_pipe, store, 0) == 45.0
    with pytest.raises(ValueError, match="v1 has no EF"):
        driver_ef(ef_pipe, store, 1)


# ---- paper shapes -----------------------------------------------------------------------


@torch.no_grad()
def test_the_paper_unet_runs_with_every_official_option_at_paper_shapes():
    """Batch 1, one loss forward: 64 frames of 14x14 latents, token [EF/100, 3072-d motion],
    zero time ids, the last frames padded and masked."""
    _, merged = load_preset("paper", REPO / "params.yaml")
    paper = validate_params(merged, "paper preset").mcdm_train
    assert paper.model.time_ids == "zeros" and not paper.normalize_motion
    assert (paper.schedule.clip_sample, paper.schedule.clip_sample_range) == (True, 4.0)
    assert paper.short_videos == "drop" and paper.random_phase
    model = paper.model.model_copy(update={"condition_ef": True})
    unet = build_unet(model).eval()
    assert unet.config.cross_attention_dim == 3073
    frames = model.num_frames
    mask = torch.ones(1, frames)
    mask[:, -3:] = 0.0
    data = {
        "latents": torch.randn(1, frames, 4, 14, 14),
        "ref_latent": torch.randn(1, 4, 14, 14),
        "motion": ef_token(torch.randn(1, 3072), torch.tensor([60.0])),
        "frame_mask": mask,
    }
    loss, _ = mcdm_loss(unet, data, build_scheduler(paper.schedule), paper.loss, time_ids="zeros")
    assert torch.isfinite(loss)


def test_the_generate_command_takes_ef_exactly_for_an_ef_pipeline(tmp_path):

    for name, ef in (("plain", False), ("ef", True)):
        tiny_pipeline(condition_ef=ef).save_pretrained(tmp_path / name)
    plain, with_ef = tmp_path / "plain", tmp_path / "ef"
    config = MotionConditionedVideoPipeline.load_config  # what pipeline_config returns
    check_ef(plain, config(plain), None)
    check_ef(with_ef, config(with_ef), 55.0)
    with pytest.raises(InputError, match="give the driver's --ef"):
        check_ef(with_ef, config(with_ef), None)
    with pytest.raises(InputError, match=r"--ef 55: .* trained without EF"):
        check_ef(plain, config(plain), 55.0)
    args = ["--motion", "a.avi", "--appearance", "b.avi", "--out", "c.gif"]
    assert build_parser().parse_args([*args, "--ef", "62.5"]).ef == 62.5
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args, "--ef", "120"])
