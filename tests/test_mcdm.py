"""MCDM video UNet: config, padding, shapes, diffusion loss and condition dropout."""

import pytest
import torch

from echomotion.diffusion.conditioning import drop_motion, jitter_motion, motion_context
from echomotion.diffusion.losses import (
    MIN_MOTION_ENERGY,
    build_scheduler,
    mcdm_loss,
    motion_balance_weights,
    snr_weights,
    training_timesteps,
)
from echomotion.diffusion.params import (
    MCDMLossParams,
    MCDMModelParams,
    NoiseScheduleParams,
    context_dim_of,
    token_width,
)
from echomotion.diffusion.unet import build_unet, crop_to, pad_to_multiple, unet_predict
from echomotion.params import pipeline_section

D = 16


def tiny_unet(levels: int = 2, num_frames: int = 3):
    torch.manual_seed(0)
    params = MCDMModelParams(block_out_channels=(32,) * levels, motion_dim=D, num_frames=num_frames)
    return build_unet(params)


def make_batch(b: int = 2, t: int = 3, size: int = 14) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "latents": torch.randn(b, t, 4, size, size, generator=g),
        "ref_latent": torch.randn(b, 4, size, size, generator=g),
        "motion": torch.randn(b, D, generator=g),
    }


@pytest.fixture(scope="module")
def unet():
    """A 2-level UNet shared by the tests that do not train it."""
    return tiny_unet()


class Recorder:
    """Forward pre-hook that keeps the positional inputs of each UNet call."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(lambda _, args: self.calls.append(args))


def test_params_validate_widths():
    with pytest.raises(ValueError, match="multiple of 32"):
        MCDMModelParams(block_out_channels=(32, 48))
    with pytest.raises(ValueError, match=">= 2 levels"):
        MCDMModelParams(block_out_channels=(32,))


def test_build_unet_config_matches_params():
    params = MCDMModelParams(block_out_channels=(32, 64, 64), motion_dim=24, num_frames=5)
    config = build_unet(params).config
    assert (config.in_channels, config.out_channels) == (8, 4)
    assert config.cross_attention_dim == 24 and config.num_frames == 5
    assert config.projection_class_embeddings_input_dim == 3 * config.addition_time_embed_dim
    assert config.down_block_types[-1] == "DownBlockSpatioTemporal"
    assert config.num_attention_heads == (1, 2, 2)


def test_pad_to_multiple_reflects_and_crop_undoes_it():
    x = torch.arange(2 * 3 * 4 * 14 * 14, dtype=torch.float32).reshape(2, 3, 4, 14, 14)
    padded, offset = pad_to_multiple(x, 8)
    assert padded.shape == (2, 3, 4, 16, 16) and offset == (1, 1)
    torch.testing.assert_close(padded[..., 0, 1:-1], x[..., 1, :])  # reflection of row 1
    torch.testing.assert_close(crop_to(padded, (14, 14), offset), x)
    same, none = pad_to_multiple(x, 2)
    assert same is x and none == (0, 0)


def test_unet_predict_pads_14_to_16_and_crops_back():
    unet = tiny_unet(levels=3)  # two downsamplings: sizes must be multiples of 4
    recorder = Recorder(unet)
    batch = make_batch(t=3)
    with torch.no_grad():
        out = unet_predict(
            unet, batch["latents"], batch["ref_latent"], batch["motion"], torch.zeros(2, 3),
            torch.tensor([10, 500]),
        )  # fmt: skip
    sample, _, context, time_ids = recorder.calls[0]
    assert sample.shape == (2, 3, 8, 16, 16)
    assert context.shape == (2, 1, D) and time_ids.shape == (2, 3)
    # the reference latent fills channels 4..7 of every frame (inside the padding)
    torch.testing.assert_close(sample[:, 2, 4:, 1:-1, 1:-1], batch["ref_latent"])
    assert out.shape == (2, 3, 4, 14, 14) and torch.isfinite(out).all()


def test_mcdm_loss_falls_on_a_fixed_batch():
    unet = tiny_unet()  # its own copy: this test trains it
    scheduler = build_scheduler(NoiseScheduleParams())
    params = MCDMLossParams(cond_dropout=0.0)
    batch = make_batch(t=2, size=8)
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(4):
        torch.manual_seed(1)  # same timesteps and noise every step
        loss, logs = mcdm_loss(unet, batch, scheduler, params)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert logs["motion_dropped"] == 0.0
    assert losses[-1] < 0.9 * losses[0]


def test_mcdm_loss_targets_the_velocity(unet):
    """An oracle that outputs the true v (recovered from its noisy input) scores zero; eps not."""
    scheduler = build_scheduler(NoiseScheduleParams())
    batch = make_batch(b=3)
    x0 = batch["latents"]
    mode = {}

    def oracle(module, args, output):
        sample, t = args[0], args[1]
        alpha = scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1, 1)
        sigma = (1 - scheduler.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1, 1)
        eps = (sample[:, :, :4] - alpha * x0) / sigma  # invert x_t = alpha x0 + sigma eps
        return (scheduler.get_velocity(x0, eps, t) if mode["v"] else eps,)

    handle = unet.register_forward_hook(oracle)
    losses = {}
    for mode["v"] in (True, False):
        with torch.no_grad():
            losses[mode["v"]] = mcdm_loss(unet, batch, scheduler, MCDMLossParams())[0].item()
    handle.remove()
    assert losses[True] == pytest.approx(0.0, abs=1e-8)
    assert losses[False] > 1e-3


@pytest.mark.parametrize("p, dropped", [(1.0, True), (0.0, False)])
def test_condition_dropout_is_applied(unet, p, dropped):
    recorder = Recorder(unet)
    batch = make_batch(b=4, size=8)
    scheduler = build_scheduler(NoiseScheduleParams())
    with torch.no_grad():
        _, logs = mcdm_loss(unet, batch, scheduler, MCDMLossParams(cond_dropout=p))
    recorder.handle.remove()
    _, _, context, time_ids = recorder.calls[0]
    expected = torch.zeros_like(batch["motion"]) if dropped else batch["motion"]
    torch.testing.assert_close(context[:, 0], expected)
    assert (time_ids[:, 2] == float(dropped)).all()
    assert logs["motion_dropped"] == float(dropped)


def test_motion_noise_jitters_the_token_the_unet_sees(unet):
    """``motion_noise`` reaches the UNet's context with its std, the EF entry untouched; at 0
    the context is the motion itself and no random number is drawn (the default's outputs
    stay those of a loss without the option)."""
    batch = make_batch(b=4, size=8)
    scheduler = build_scheduler(NoiseScheduleParams())
    contexts = {}
    for std in (0.0, 0.5):
        recorder = Recorder(unet)
        torch.manual_seed(3)
        with torch.no_grad():
            mcdm_loss(unet, batch, scheduler, MCDMLossParams(cond_dropout=0.0, motion_noise=std),
                      fixed_columns=1)  # fmt: skip
        recorder.handle.remove()
        contexts[std] = recorder.calls[0][2][:, 0]
        contexts[f"next draw {std}"] = torch.rand(1)
    torch.testing.assert_close(contexts[0.0], batch["motion"])
    jitter = contexts[0.5] - batch["motion"]
    assert (jitter[:, 0] == 0).all() and (jitter[:, 1:] != 0).all()
    assert not torch.equal(contexts["next draw 0.0"], contexts["next draw 0.5"])
    big = jitter_motion(
        torch.zeros(4000, 5), 0.5, keep=2, generator=torch.Generator().manual_seed(0)
    )
    assert (big[:, :2] == 0).all() and big[:, 2:].std().item() == pytest.approx(0.5, rel=0.03)
    state = torch.get_rng_state()
    assert jitter_motion(batch["motion"], 0.0) is batch["motion"]
    assert torch.equal(torch.get_rng_state(), state)


def test_drop_motion_rate_and_mask():
    motion = torch.ones(2000, 3)
    out, mask = drop_motion(motion, 0.3, generator=torch.Generator().manual_seed(0))
    assert 0.25 < mask.mean().item() < 0.35
    torch.testing.assert_close(out[:, 0], 1.0 - mask)


def test_mcdm_loss_names_mismatched_motion_dim(unet):
    batch = make_batch()
    batch["motion"] = torch.zeros(2, D + 1)
    with pytest.raises(ValueError, match=r"\(2, 16\).*got \(2, 17\)"):
        mcdm_loss(unet, batch, build_scheduler(NoiseScheduleParams()), MCDMLossParams())


def test_min_snr_weights_clip_the_high_snr_timesteps():
    """v: min(SNR, g) / (SNR + 1); eps: min(SNR, g) / SNR; None: ones."""
    scheduler = build_scheduler(NoiseScheduleParams())
    t = torch.tensor([0, 10, 500, 999])
    alphas = scheduler.alphas_cumprod[t]
    snr = alphas / (1 - alphas)
    torch.testing.assert_close(snr_weights(scheduler, t, 5.0), snr.clamp(max=5.0) / (snr + 1))
    eps = build_scheduler(NoiseScheduleParams(prediction_type="epsilon"))
    torch.testing.assert_close(snr_weights(eps, t, 5.0), snr.clamp(max=5.0) / snr)
    torch.testing.assert_close(snr_weights(scheduler, t, None), torch.ones(4))
    w = snr_weights(scheduler, t, 5.0)
    assert w[0] < 0.01 and w[-1] == pytest.approx(snr[-1] / (snr[-1] + 1))


def test_min_snr_loss_is_the_weighted_per_sample_error(unet):
    """A constant-zero UNet makes the loss the weighted mean of |v|^2 per sample."""
    scheduler = build_scheduler(NoiseScheduleParams())
    batch = make_batch(b=3)
    handle = unet.register_forward_hook(lambda m, a, out: (torch.zeros_like(out[0]),))
    seen = {}
    original = scheduler.add_noise

    def spy(latents, noise, t):
        seen.update(noise=noise, t=t)
        return original(latents, noise, t)

    scheduler.add_noise = spy
    torch.manual_seed(3)
    with torch.no_grad():
        loss, _ = mcdm_loss(unet, batch, scheduler, MCDMLossParams(snr_gamma=1.0))
    handle.remove()
    v = scheduler.get_velocity(batch["latents"], seen["noise"], seen["t"])
    expected = (snr_weights(scheduler, seen["t"], 1.0) * v.pow(2).flatten(1).mean(1)).mean()
    torch.testing.assert_close(loss, expected)


def test_noise_offset_is_constant_over_frames_and_pixels(unet):
    scheduler = build_scheduler(NoiseScheduleParams())
    batch = make_batch(b=64, t=3, size=8)
    batch["latents"] = torch.zeros_like(batch["latents"])
    seen = {}
    original = scheduler.add_noise

    def spy(latents, noise, t):
        seen["noise"] = noise
        return original(latents, noise, t)

    scheduler.add_noise = spy
    torch.manual_seed(0)
    with torch.no_grad():
        mcdm_loss(unet, batch, scheduler, MCDMLossParams(noise_offset=1.0))
    means = seen["noise"].mean(dim=(1, 3, 4))  # (B, C): per sample and channel over T, h, w
    # plain noise: means of 192 N(0,1) values (std 0.07); with offset 1 their std is ~1
    assert 0.7 < means.std().item() < 1.3


def test_one_token_context_is_the_vector_and_k_tokens_are_indexed_chunks():
    motion = torch.arange(12.0).reshape(2, 6)
    torch.testing.assert_close(motion_context(motion, 1), motion[:, None, :])
    tokens = motion_context(motion, 3)  # (2, 3, 6 / 3 + 3)
    assert tokens.shape == (2, 3, 5)
    torch.testing.assert_close(tokens[:, :, :2], motion.reshape(2, 3, 2))
    torch.testing.assert_close(tokens[:, :, 2:], torch.eye(3).expand(2, 3, 3))
    dropped = motion_context(torch.zeros(2, 6), 3)
    assert len({tuple(t.tolist()) for t in dropped[0]}) == 3  # distinct keys when dropped
    with pytest.raises(ValueError, match="4 motion tokens must divide the 6-d"):
        motion_context(motion, 4)


def test_token_width_and_its_inverse():
    for dim, k in [(768, 1), (768, 6), (769, 1), (12, 3)]:
        assert context_dim_of(token_width(dim, k), k) == dim
    assert token_width(768, 6) == 134
    params = MCDMModelParams(block_out_channels=(32, 32), motion_dim=24, motion_tokens=4)
    assert params.token_width == 10 and build_unet(params).config.cross_attention_dim == 10
    with pytest.raises(ValueError, match=r"motion_tokens \(5\) must divide .* \(24: motion_dim\)"):
        MCDMModelParams(block_out_channels=(32, 32), motion_dim=24, motion_tokens=5)
    with pytest.raises(ValueError, match=r"\(25: motion_dim \+ 1 for EF\)"):
        MCDMModelParams(
            block_out_channels=(32, 32), motion_dim=24, motion_tokens=4, condition_ef=True
        )


def test_a_single_token_reaches_every_position_alike_and_several_do_not():
    """Why ``motion_tokens``: softmax over one key is 1, so cross-attention returns the same
    vector at every query; over several keys each query weighs them by itself."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attention = Attention(query_dim=8, cross_attention_dim=5, heads=1, dim_head=8).eval()
    queries = torch.randn(1, 10, 8)  # 10 positions
    motion = torch.randn(1, 6)
    with torch.no_grad():
        one = attention(queries, motion_context(torch.randn(1, 5), 1))
        three = attention(queries, motion_context(motion, 3))
    torch.testing.assert_close(one, one[:, :1].expand_as(one))  # one output for every position
    assert (three - three[:, :1]).abs().amax() > 1e-3


def test_loss_with_several_motion_tokens_trains_and_checks_the_width():
    torch.manual_seed(0)
    params = MCDMModelParams(
        block_out_channels=(32, 32), motion_dim=D, num_frames=3, motion_tokens=4
    )
    unet = build_unet(params)
    batch = make_batch()
    scheduler = build_scheduler(NoiseScheduleParams())
    loss, _ = mcdm_loss(unet, batch, scheduler, MCDMLossParams(), motion_tokens=4)
    loss.backward()
    assert torch.isfinite(loss) and unet.conv_in.weight.grad is not None
    with pytest.raises(ValueError, match=r"motion must be \(2, 16\) .*4 token"):
        mcdm_loss(unet, {**batch, "motion": torch.randn(2, D + 1)}, scheduler, MCDMLossParams(),
                  motion_tokens=4)  # fmt: skip


def test_motion_balance_weighs_each_window_by_its_own_motion():
    """p = 1: a window's weight is 1 / its mean squared residual (floored), so leaving a
    small motion out costs as much as leaving out a large one; p = 0 weighs all alike."""
    small, large = torch.full((1, 3, 4, 2, 2), 0.5), torch.full((1, 3, 4, 2, 2), 2.0)
    residual = torch.cat([small, large])  # energies 0.25 and 4
    weights = motion_balance_weights(residual, None, MCDMLossParams(motion_balance=1.0))
    torch.testing.assert_close(weights, torch.tensor([4.0, 0.25]))
    assert (weights * (residual**2).flatten(1).mean(1)).unique().tolist() == [1.0]
    half = motion_balance_weights(residual, None, MCDMLossParams(motion_balance=0.5))
    torch.testing.assert_close(half, torch.tensor([2.0, 0.5]))
    still = motion_balance_weights(
        torch.zeros(1, 3, 4, 2, 2), None, MCDMLossParams(motion_balance=1.0)
    )
    torch.testing.assert_close(still, torch.tensor([1 / MIN_MOTION_ENERGY]))
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the padded frame is left out of the energy
    padded = torch.cat([large[:, :2], torch.zeros(1, 1, 4, 2, 2)], dim=1)
    masked = motion_balance_weights(padded, mask, MCDMLossParams(motion_balance=1.0))
    torch.testing.assert_close(masked, torch.tensor([0.25]))


def test_motion_balance_changes_the_loss_and_needs_the_residual_target():
    unet, batch, scheduler = tiny_unet(), make_batch(), build_scheduler(NoiseScheduleParams())
    plain, balanced = MCDMLossParams(), MCDMLossParams(motion_balance=1.0)
    losses = []
    for params in (plain, balanced):
        torch.manual_seed(3)
        losses.append(mcdm_loss(unet, batch, scheduler, params, residual_scale=2.0)[0].item())
    assert losses[0] != pytest.approx(losses[1])
    with pytest.raises(ValueError, match="needs residual"):
        mcdm_loss(unet, batch, scheduler, balanced)
    section = pipeline_section("mcdm_train")
    with pytest.raises(ValueError, match=r"motion_balance \(1.0\) weighs .*model.residual true"):
        type(section).model_validate(
            section.model_dump()
            | {
                "loss": balanced.model_dump(),
                "model": section.model.model_dump() | {"residual": False},
            }
        )


def test_training_timesteps_shift_towards_high_noise_and_stay_uniform_at_one():
    torch.manual_seed(0)
    plain = training_timesteps(5, 1000)
    torch.manual_seed(0)
    assert torch.equal(plain, torch.randint(0, 1000, (5,)))  # shift 1: the official draws
    torch.manual_seed(0)
    uniform, shifted = training_timesteps(20000, 1000), training_timesteps(20000, 1000, 3.0)
    assert abs(uniform.float().median() - 500) < 20 and abs(shifted.float().median() - 750) < 20
    assert shifted.min() >= 0 and shifted.max() <= 999 and shifted.dtype == torch.long
    with pytest.raises(ValueError, match="timestep_shift"):
        MCDMLossParams(timestep_shift=0.5)  # below 1 would favour low noise


def test_stand_in_windows_are_shaped_like_the_training_set_items():
    """The benchmarks, the GPU check and the two-rank test train on
    :func:`echomotion.diffusion.stand_ins.random_window`: it must give the keys, shapes and
    dtypes of a real ``LatentClipDataset`` item, so the loss sees what it sees in training."""
    import numpy as np

    from echomotion.diffusion.stand_ins import random_window
    from echomotion.tasks.mcdm_train.run import LatentClipDataset

    model = pipeline_section("mcdm_train").model.model_copy(update={"num_frames": 4})
    assert model.contraction and model.time_ids == "heart_rate"  # the default's inputs
    frames = np.random.default_rng(0).normal(size=(20, model.latent_channels, 8, 8))
    real = LatentClipDataset(
        frames.astype(np.float32), np.array([0, 20]), np.array([0]),
        torch.zeros(1, model.motion_dim), np.array([25.0]), n_frames=4, stride=2,
        heart_rate=np.array([70.0]), contraction=[np.linspace(0, 1, 20)],
    )[0]  # fmt: skip
    stand_in = random_window(model, 8, torch.Generator().manual_seed(0))
    assert stand_in.keys() == real.keys()
    for key, value in real.items():
        assert (stand_in[key].shape, stand_in[key].dtype) == (value.shape, value.dtype), key
    assert torch.equal(stand_in["ref_latent"], stand_in["latents"][0])
    no_channel = random_window(model.model_copy(update={"contraction": False}), 8)
    assert "contraction" not in no_channel
    again = random_window(model, 8, torch.Generator().manual_seed(0))
    assert all(torch.equal(again[k], v) for k, v in stand_in.items())  # seeded: repeatable
