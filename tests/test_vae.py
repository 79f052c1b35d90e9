"""Latent VAE: shapes, objective, encode/decode helpers, scaling factor and metrics."""

import numpy as np
import pytest
import torch

from conftest import section
from echomotion.diffusion.losses import vae_loss
from echomotion.diffusion.metrics import psnr, reconstruction_metrics, ssim
from echomotion.diffusion.params import VAELossParams, VAEModelParams
from echomotion.diffusion.vae import (
    build_vae,
    decode_latents,
    downsampling,
    encode_frames,
    estimate_scaling_factor,
    frames_to_images,
    images_to_frames,
)

TINY = VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae(TINY).eval()


def smooth_frames(n: int, size: int = 112) -> np.ndarray:
    """Blurry blobs, uint8 (n, size, size): a learnable, non-constant image."""
    yy, xx = np.mgrid[:size, :size] / size
    frames = [128 + 100 * np.sin(6 * xx + k) * np.cos(4 * yy - k) for k in range(n)]
    return np.clip(frames, 0, 255).astype(np.uint8)


def test_params_reject_bad_sizes():
    with pytest.raises(ValueError, match="2 to 4 entries"):
        VAEModelParams(block_out_channels=(8,))
    with pytest.raises(ValueError, match="2 to 4 entries"):
        VAEModelParams(block_out_channels=(8, 8, 16, 16, 16))
    assert VAEModelParams(block_out_channels=(8, 8, 16), norm_num_groups=8).downsampling == 4
    with pytest.raises(ValueError, match="multiple of 4"):
        section(
            "vae_train",
            model=VAEModelParams(block_out_channels=(8, 8, 16), norm_num_groups=8),
            crop_size=38,
        )
    with pytest.raises(ValueError, match="must divide"):
        VAEModelParams(block_out_channels=(8, 12, 16, 16), norm_num_groups=8)


def test_three_levels_give_28x28_latents():
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16), norm_num_groups=8)).eval()
    latents = encode_frames(vae, smooth_frames(2), batch_size=2)
    assert latents.shape == (2, 4, 28, 28) and downsampling(vae) == 4
    assert decode_latents(vae, latents).shape == (2, 112, 112)


def test_vae_shapes_112_to_14_and_back(vae):
    images = frames_to_images(smooth_frames(2))
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.mode()).sample
    assert vae.config.in_channels == vae.config.out_channels == 1
    assert posterior.mean.shape == (2, 4, 14, 14)
    assert recon.shape == (2, 1, 112, 112)


def test_frame_image_conversion_round_trips():
    frames = np.array([[[0, 255], [127, 128]]], dtype=np.uint8)
    images = frames_to_images(frames)
    assert images.shape == (1, 1, 2, 2)
    assert images.min() == -1.0 and images.max() == 1.0
    np.testing.assert_array_equal(images_to_frames(images), frames)
    with pytest.raises(TypeError, match="uint8"):
        frames_to_images(frames.astype(np.float32))


def test_vae_loss_is_finite_and_falls():
    torch.manual_seed(0)
    model = build_vae(TINY)
    batch = {"image": frames_to_images(smooth_frames(2, size=16))}
    params = VAELossParams(kl_weight=1e-4, ssim_weight=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        torch.manual_seed(1)  # same posterior sample each step: the loss is a function of weights
        loss, logs = vae_loss(model, batch, params)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert set(logs) == {"rec", "kl", "ssim", "loss"}
    assert losses[-1] < 0.8 * losses[0]


def test_vae_loss_l2_is_mean_squared_error(vae):
    batch = {"image": frames_to_images(smooth_frames(1, size=16))}
    torch.manual_seed(3)
    _, l1 = vae_loss(vae, batch, VAELossParams(reconstruction="l1", kl_weight=0.0))
    torch.manual_seed(3)
    _, l2 = vae_loss(vae, batch, VAELossParams(reconstruction="l2", kl_weight=0.0))
    assert l2["rec"] != pytest.approx(l1["rec"])
    assert l2["loss"] == pytest.approx(l2["rec"])


def test_encode_decode_frames_dtype_shape_and_determinism(vae):
    frames = smooth_frames(3, size=48)
    latents = encode_frames(vae, frames, batch_size=2)
    assert latents.dtype == np.float16 and latents.shape == (3, 4, 6, 6)
    # posterior mode, not a sample: the same frames give the same latents
    np.testing.assert_array_equal(latents, encode_frames(vae, frames, batch_size=2))
    np.testing.assert_allclose(latents, encode_frames(vae, frames, batch_size=3), atol=1e-3)
    decoded = decode_latents(vae, latents, batch_size=2)
    assert decoded.dtype == np.uint8 and decoded.shape == (3, 48, 48)


def test_scaling_factor_gives_unit_std_and_round_trips():
    torch.manual_seed(0)
    model = build_vae(TINY).eval()
    frames = smooth_frames(4, size=32)
    raw = encode_frames(model, frames).astype(np.float32)
    factor = estimate_scaling_factor(model, frames, batch_size=3)
    assert factor == pytest.approx(1.0 / raw.std(), rel=1e-2)
    model.register_to_config(scaling_factor=factor)
    scaled = encode_frames(model, frames).astype(np.float32)
    assert scaled.std() == pytest.approx(1.0, rel=1e-2)
    np.testing.assert_allclose(scaled, raw * factor, rtol=1e-2, atol=1e-2)
    # decoding divides the factor back out: same frames as the unscaled model gives
    unscaled_model = build_vae(TINY).eval()
    unscaled_model.load_state_dict(model.state_dict())
    diff = decode_latents(model, scaled).astype(int) - decode_latents(unscaled_model, raw)
    assert np.abs(diff).max() <= 1


def test_psnr_and_ssim_values():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 32, 32)
    assert torch.isinf(psnr(target, target)).all()
    shifted = (target + 0.1).clamp(max=10)
    assert psnr(shifted, target) == pytest.approx(torch.full((2,), 20.0), abs=1e-3)
    assert ssim(target, target) == pytest.approx(torch.ones(2), abs=1e-5)
    assert (ssim(torch.rand(2, 1, 32, 32), target) < 0.2).all()
    with pytest.raises(ValueError, match="share one"):
        psnr(target, target[:1])


def test_reconstruction_metrics_report_psnr_and_ssim(vae):
    metrics = reconstruction_metrics(vae, smooth_frames(2, size=32), batch_size=2)
    assert set(metrics) == {"psnr", "ssim"}
    assert np.isfinite(metrics["psnr"]) and -1.0 <= metrics["ssim"] <= 1.0
