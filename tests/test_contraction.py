"""The per-frame contraction condition (``mcdm_train.model.contraction``): the driver's
label-free contraction curve as one more UNet input channel, in training (the window's
frames, dropped with the motion), in the pipeline (each window its frames; zero in the
unconditional branch), in the sample stage and in the generate command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echomotion.diffusion.losses import build_scheduler, mcdm_loss
from echomotion.diffusion.params import (
    MCDMLossParams,
    MCDMModelParams,
    NoiseScheduleParams,
    VAEModelParams,
)
from echomotion.diffusion.pipeline import MotionConditionedVideoPipeline
from echomotion.diffusion.unet import build_unet, takes_contraction, unet_predict
from echomotion.diffusion.vae import build_vae
from echomotion.tasks.mcdm_train.run import LatentClipDataset

pytestmark = pytest.mark.usefixtures("one_thread")

D, SIZE, WINDOW = 6, 32, 4  # motion dim, frame size (latents 4x4), training window


def tiny_unet(contraction: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MCDMModelParams(block_out_channels=(32, 32), num_frames=WINDOW, motion_dim=D,
                            addition_time_embed_dim=8, contraction=contraction)  # fmt: skip
    return build_unet(model)


def tiny_pipeline(contraction: bool = True) -> MotionConditionedVideoPipeline:
    torch.manual_seed(0)
    vae = build_vae(VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8)).eval()
    pipe = MotionConditionedVideoPipeline(
        vae, tiny_unet(contraction).eval(), build_scheduler(NoiseScheduleParams()), fps=12.5,
        contraction=contraction,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def spy_inputs(unet: torch.nn.Module) -> list[torch.Tensor]:
    """The input sample ``(B, T, C, h, w)`` of every UNet call."""
    calls = []
    unet.register_forward_pre_hook(lambda _m, args: calls.append(args[0].clone()))
    return calls


def batch(b: int = 2, t: int = WINDOW) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "latents": torch.randn(b, t, 4, 6, 6, generator=g),
        "ref_latent": torch.randn(b, 4, 6, 6, generator=g),
        "motion": torch.randn(b, D, generator=g),
        "contraction": torch.rand(b, t, generator=g),
    }


def test_the_unet_reads_each_frames_contraction_from_one_more_channel():
    unet, plain = tiny_unet(), tiny_unet(contraction=False)
    assert unet.config.in_channels == 9 and plain.config.in_channels == 8
    assert takes_contraction(unet) and not takes_contraction(plain)
    data = batch()
    args = (
        data["latents"],
        data["ref_latent"],
        data["motion"],
        torch.zeros(2, 3),
        torch.tensor(500),
    )
    calls = spy_inputs(unet)
    with torch.no_grad():
        out = unet_predict(unet, *args, contraction=data["contraction"])
        other = unet_predict(unet, *args, contraction=1.0 - data["contraction"])
    channel = calls[0][:, :, 8]  # (B, T, h', w'): constant over each frame, the frame's value
    assert torch.equal(channel.amax((2, 3)), data["contraction"])
    assert torch.equal(channel.amin((2, 3)), data["contraction"])
    assert out.shape == data["latents"].shape and not torch.allclose(out, other)
    with pytest.raises(ValueError, match="pass `contraction`"):
        unet_predict(unet, *args)
    with pytest.raises(ValueError, match="has no contraction channel"):
        unet_predict(plain, *args, contraction=data["contraction"])
    with pytest.raises(ValueError, match=r"contraction must be \(2, 4\)"):
        unet_predict(unet, *args, contraction=data["contraction"][:, :3])


@pytest.mark.parametrize("dropout", [0.0, 1.0])
def test_training_feeds_the_windows_contraction_and_drops_it_with_the_motion(dropout):
    unet, data = tiny_unet(), batch()
    calls = spy_inputs(unet)
    with torch.no_grad():
        loss, logs = mcdm_loss(unet, data, build_scheduler(NoiseScheduleParams()),
                               MCDMLossParams(cond_dropout=dropout))  # fmt: skip
    assert torch.isfinite(loss) and logs["motion_dropped"] == dropout
    fed = calls[0][:, :, 8, 0, 0]  # (B, T)
    assert torch.equal(fed, data["contraction"] * (1.0 - dropout))


def test_a_window_carries_the_contraction_of_its_frames():
    lengths, stride = (12, 9), 2
    offsets = np.r_[0, np.cumsum(lengths)]
    curves = [np.linspace(0, 1, n, dtype=np.float32) ** 2 for n in lengths]
    latents = np.zeros((offsets[-1], 4, 2, 2), np.float32)
    dataset = LatentClipDataset(
        latents, offsets, np.arange(2), torch.zeros(2, D), np.array([25.0, 25.0]), WINDOW,
        stride, anchors=[np.array([3]), np.array([0, 1])], contraction=curves,
    )  # fmt: skip
    torch.manual_seed(0)
    for index, starts in ((0, {3}), (1, {0, 1})):
        for _ in range(4):
            item = dataset[index]
            start = [
                s for s in starts if np.allclose(item["contraction"], curves[index][s : s + 8 : 2])
            ]
            assert item["contraction"].shape == (WINDOW,) and start
    with pytest.raises(ValueError, match="must have the videos' lengths"):
        LatentClipDataset(latents, offsets, np.arange(2), torch.zeros(2, D), np.array([25.0, 25.0]),
                          WINDOW, stride, contraction=curves[::-1])  # fmt: skip


def test_the_pipeline_gives_each_window_its_frames_contraction_and_the_uncond_branch_none():
    pipe = tiny_pipeline()
    calls = spy_inputs(pipe.unet)
    curve = np.linspace(0.0, 1.0, 7, dtype=np.float32)[None]  # 7 frames: windows 0-3, 3-6
    refs = np.zeros((2, SIZE, SIZE), np.uint8)
    common = {"motion": torch.ones(1, D), "num_inference_steps": 1, "output_type": "latent"}
    pipe(reference=refs, contraction=curve, num_frames=7, window_overlap=1,
         guidance_scale=2.0, **common)  # fmt: skip
    first, second = (c[:, :, 8, 0, 0] for c in calls)  # (2B, 4): [uncond, cond]
    assert not first[:2].any() and not second[:2].any()
    assert torch.allclose(first[2:], torch.from_numpy(curve[:, 0:4]).expand(2, -1))
    assert torch.allclose(second[2:], torch.from_numpy(curve[:, 3:7]).expand(2, -1))
    with pytest.raises(ValueError, match="pass `contraction`"):
        pipe(reference=refs, **common)
    with pytest.raises(ValueError, match=r"contraction must be \(2 or 1, 4\)"):
        pipe(reference=refs, contraction=curve, **common)
    with pytest.raises(ValueError, match="trained without it"):
        tiny_pipeline(contraction=False)(reference=refs, contraction=curve[:, :4], **common)
    with pytest.raises(ValueError, match="in_channels"):
        MotionConditionedVideoPipeline(pipe.vae, tiny_unet(False), pipe.scheduler, contraction=True)


def test_a_saved_contraction_pipeline_loads_with_it(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    pipe = MotionConditionedVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.config.contraction and takes_contraction(pipe.unet)
