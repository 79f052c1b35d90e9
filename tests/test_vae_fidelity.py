"""The VAE's LDM objective (issue 14): LPIPS loading, the PatchGAN and its wiring into the
one-optimizer training loop (gradient routing, disc_start, resume, DDP), the stage's
outputs, and the default path left as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from functools import partial

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from conftest import REPO, section
from echomotion.cli.preset import load_preset
from echomotion.diffusion.discriminator import (
    NLayerDiscriminator,
    VAEWithDiscriminator,
    adaptive_weight,
    build_discriminator,
    discriminator_loss,
    vae_gan_loss,
)
from echomotion.diffusion.losses import vae_loss
from echomotion.diffusion.lpips import LPIPS, load_lpips
from echomotion.diffusion.params import VAELossParams, VAEModelParams
from echomotion.diffusion.vae import build_vae
from echomotion.params import validate_params
from echomotion.tasks.vae_train.params import VAETrainParams
from echomotion.tasks.vae_train.run import train_vae, vae_objective
from echomotion.training import checkpoint as ckpt
from echomotion.training.params import TrainParams

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = (4, 4, 8, 8, 8)  # widths of a small VGG16-layout LPIPS stand-in
TINY_VAE = VAEModelParams(block_out_channels=(8, 16), norm_num_groups=8)
GAN = VAELossParams(disc_weight=0.5, disc_start=0, disc_channels=8, disc_layers=2)


def tiny_wrapper(loss: VAELossParams = GAN, grad_accum: int = 1) -> VAEWithDiscriminator:
    torch.manual_seed(0)
    return VAEWithDiscriminator(build_vae(TINY_VAE), build_discriminator(loss), grad_accum)


def images(n: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- LPIPS --------------------------------------------------------------------------------


def stand_in() -> LPIPS:
    torch.manual_seed(3)
    net = LPIPS(SMALL)
    for name, p in net.named_parameters():  # heads are non-negative in the real weights
        if name.startswith("lin"):
            p.data.abs_()
    return net.eval()


def test_lpips_loads_safetensors_and_pth_and_computes_the_same_distance(tmp_path):
    net = stand_in()
    save_file(net.state_dict(), tmp_path / "lpips.safetensors")
    torch.save(net.state_dict(), tmp_path / "lpips.pth")
    x, y = images(seed=1), images(seed=2)
    expected = net(x, y)
    for name in ("lpips.safetensors", "lpips.pth"):
        loaded = load_lpips(tmp_path / name, widths=SMALL)
        assert torch.equal(loaded(x, y), expected)
        assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    assert expected.shape == (2,) and (expected > 0).all()
    assert torch.allclose(net(x, x), torch.zeros(2))
    # grayscale is LPIPS of the image replicated to RGB
    assert torch.equal(net(x, y), net(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))


def test_lpips_maps_torchvision_trunk_keys_and_merges_the_heads_file(tmp_path):
    """The reference files: torchvision's vgg16 (``features.i``, plus an unused
    ``classifier``) and the lpips package's vgg.pth (``lin{k}.model.1.weight``)."""
    net = stand_in()
    state = net.state_dict()
    trunk = {"features." + k.split(".", 2)[2]: v for k, v in state.items() if k[:4] == "net."}
    trunk["classifier.0.weight"] = torch.zeros(2, 2)
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    heads |= {"scaling_layer.shift": torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)}
    torch.save(trunk, tmp_path / "vgg16.pth")
    save_file(heads, tmp_path / "heads.safetensors")
    loaded = load_lpips([tmp_path / "vgg16.pth", tmp_path / "heads.safetensors"], widths=SMALL)
    x, y = images(seed=4), images(seed=5)
    assert torch.equal(loaded(x, y), net(x, y))
    assert "features.28.weight" in {"features." + k.split(".", 2)[2] for k in LPIPS().state_dict()
                                    if k.startswith("net.")}  # fmt: skip


def test_lpips_loading_errors_name_the_file_and_the_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
        load_lpips(tmp_path / "nowhere.safetensors", widths=SMALL)
    state = stand_in().state_dict()
    partial_state = {k: v for k, v in state.items() if k != "lin4.model.1.weight"}
    save_file(partial_state, tmp_path / "a.safetensors")
    torch.save(state | {"extra.weight": torch.zeros(1)}, tmp_path / "b.pth")
    with pytest.raises(ValueError, match=r"missing \['lin4.model.1.weight'\], unexpected \[\]"):
        load_lpips(tmp_path / "a.safetensors", widths=SMALL)
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['extra.weight'\]"):
        load_lpips(tmp_path / "b.pth", widths=SMALL)
    save_file(state, tmp_path / "small.safetensors")
    with pytest.raises(
        ValueError,
        match=r"31 tensors of other shapes: \['lin0.model.1.weight: \(1, 4, 1, 1\) != \(1, 64, ",
    ):
        load_lpips(tmp_path / "small.safetensors")  # VGG16 widths: wrong shapes


# -- discriminator and the GAN terms ------------------------------------------------------------


def test_patch_discriminator_layout_and_shapes():
    disc = NLayerDiscriminator(1, channels=64, n_layers=3)
    assert disc(torch.zeros(1, 1, 112, 112)).shape == (1, 1, 12, 12)  # 70x70-ish patches
    widths = [m.out_channels for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [64, 128, 256, 512, 1]
    assert {"main.0.weight", "main.2.weight", "main.3.running_mean", "main.11.bias"} <= set(
        disc.state_dict()
    )
    assert NLayerDiscriminator(1, 8, 2)(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 6, 6)


def test_hinge_and_vanilla_discriminator_losses():
    one = torch.ones(3)
    assert discriminator_loss(2 * one, -2 * one, "hinge") == 0
    assert discriminator_loss(0 * one, 0 * one, "hinge") == 1
    assert discriminator_loss(0 * one, 0 * one, "vanilla") == pytest.approx(0.6931, abs=1e-4)
    with pytest.raises(ValueError, match="'wgan'"):
        discriminator_loss(one, one, "wgan")


def test_generator_term_moves_only_the_vae_and_disc_term_only_the_discriminator():
    model = tiny_wrapper()
    out = model(images())
    (-out.logits_gen.mean()).backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert model.vae.decoder.conv_out.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    discriminator_loss(out.logits_real, out.logits_fake, "hinge").backward()
    assert all(p.grad is None for p in model.vae.parameters())
    assert sum(p.grad.abs().sum() for p in model.discriminator.parameters()) > 0


def test_before_disc_start_the_loss_is_vae_loss_and_the_discriminator_gets_no_gradient():
    params = GAN.model_copy(update={"disc_start": 2, "ssim_weight": 1.0})
    model, x = tiny_wrapper(params), images()
    torch.manual_seed(7)
    plain, _ = vae_loss(model.vae, {"image": x}, params)
    torch.manual_seed(7)
    loss, logs = vae_gan_loss(model, {"image": x}, params)
    assert loss.item() == plain.item() and logs["d_weight"] == 0
    loss.backward()
    assert all(p.grad.abs().sum() == 0 for p in model.discriminator.parameters())
    model.zero_grad(set_to_none=True)
    vae_gan_loss(model, {"image": x}, params)  # step 1: still off
    loss, logs = vae_gan_loss(model, {"image": x}, params)  # step 2: on
    loss.backward()
    assert logs["d_weight"] > 0 and model.step == 3
    assert sum(p.grad.abs().sum() for p in model.discriminator.parameters()) > 0


def test_step_counts_optimizer_steps_and_survives_save_and_load(tmp_path):
    model = tiny_wrapper(grad_accum=2)
    for _ in range(5):
        model(images(n=1))
    model.eval()
    model(images(n=1))  # evaluation does not count
    assert (int(model.micro_steps), model.step) == (5, 2)
    ckpt.save_weights(model, tmp_path)
    again = tiny_wrapper(grad_accum=2)
    ckpt.load_weights(again, tmp_path)
    assert again.step == 2


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    w = torch.randn(3, 3, requires_grad=True)
    rec, gen = (w * 2).sum(), (w * 0.5).pow(2).sum()
    expected = (2 * torch.ones(3, 3)).norm() / ((0.5 * w).norm() + 1e-4)
    assert adaptive_weight(rec, gen, w).item() == pytest.approx(expected.item(), rel=1e-5)
    assert adaptive_weight(rec, 0 * w.sum(), w).item() == pytest.approx(1e4)  # clamped
    params = GAN.model_copy(update={"disc_adaptive": False})
    _, logs = vae_gan_loss(tiny_wrapper(params), {"image": images()}, params)
    assert logs["d_weight"] == 0.5


def test_lpips_term_enters_the_loss(tmp_path):
    params = VAELossParams(lpips_weight=2.0, lpips_weights="x")
    model, x, lpips = VAEWithDiscriminator(build_vae(TINY_VAE), None), images(), stand_in()
    torch.manual_seed(7)
    loss, logs = vae_gan_loss(model, {"image": x}, params, lpips=lpips)
    torch.manual_seed(7)
    plain, _ = vae_loss(model.vae, {"image": x}, params)
    assert logs["lpips"] > 0 and "d" not in logs
    assert loss.item() == pytest.approx(plain.item() + 2.0 * logs["lpips"], rel=1e-5)


# -- params and the stage -----------------------------------------------------------------------


def test_defaults_keep_the_plain_vae_and_vae_loss():
    params = section("vae_train")
    assert not params.loss.gan_or_lpips
    vae = build_vae(params.model)
    model, loss_fn = vae_objective(vae, params)
    assert model is vae and loss_fn.func is vae_loss
    # a weight without a file leaves LPIPS off
    off = params.model_copy(update={"loss": VAELossParams(lpips_weight=1.0)})
    assert vae_objective(vae, off)[0] is vae


def test_paper_preset_states_the_official_gan_and_lpips_is_off_without_a_file():
    _, merged = load_preset("paper", REPO / "params.yaml")
    loss = validate_params(merged, "paper preset").vae_train.loss
    official = (0.5, 50001, True, "hinge", 3, 64, 1.0, 1e-6)
    stated = (loss.disc_weight, loss.disc_start, loss.disc_adaptive, loss.disc_loss,
              loss.disc_layers, loss.disc_channels, loss.lpips_weight, loss.kl_weight)  # fmt: skip
    assert stated == official
    assert loss.lpips_weights is None and not loss.lpips_active and loss.gan_or_lpips


def test_paper_shape_gan_step_on_cpu():
    """Paper VAE + 64-wide 3-layer PatchGAN + full-size VGG16 LPIPS (random weights),
    batch 1 of 112x112, one loss and backward."""
    _, merged = load_preset("paper", REPO / "params.yaml")
    paper = validate_params(merged, "paper preset").vae_train
    torch.manual_seed(0)
    model = VAEWithDiscriminator(build_vae(paper.model), build_discriminator(paper.loss))
    loss_params = paper.loss.model_copy(update={"disc_start": 0})
    lpips = LPIPS().eval().requires_grad_(False)
    loss, logs = vae_gan_loss(model, {"image": images(n=1, size=112)}, loss_params, lpips)
    loss.backward()
    assert torch.isfinite(loss) and logs["d_weight"] > 0 and logs["lpips"] != 0
    assert model.discriminator.main[0].weight.grad.abs().sum() > 0


def gan_params(steps: int) -> VAETrainParams:
    return section("vae_train",
        model=VAEModelParams(block_out_channels=(8, 8, 16, 16), norm_num_groups=8),
        loss=VAELossParams(disc_weight=0.5, disc_start=1, disc_channels=8, disc_layers=2),
        train=TrainParams(steps=steps, batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1,
                          ema_decay=0.9),
        crop_size=32, scale_frames=16, eval_frames=8, encode_batch_size=16,
    )  # fmt: skip


def test_stage_with_the_discriminator_saves_the_plain_vae_and_resumes(tiny_dataset, tmp_path):
    out = tmp_path / "vae"
    run = partial(train_vae, tiny_dataset["videos"], out_dir=out, log_file=out / "t.tsv", seed=3)
    run(gan_params(2))
    metrics = run(gan_params(4))  # continues step-0000002
    assert metrics["steps"] == 4 and metrics["psnr"] > 0
    for folder in ("model", "model_raw"):
        assert not (out / folder / ckpt.WEIGHTS_FILE).exists()
        AutoencoderKL.from_pretrained(out / folder)  # what latents and sample load
    assert json.loads((out / "model/config.json").read_text())["scaling_factor"] != 1.0
    rows = (out / "t.tsv").read_text().splitlines()
    assert len(rows) == 5 and "d_weight" in rows[0]
    # the checkpoint holds the discriminator and the step counter
    wrapper = VAEWithDiscriminator(build_vae(gan_params(4).model), build_discriminator(
        gan_params(4).loss))  # fmt: skip
    ckpt.load_weights(wrapper, out / "checkpoints/step-0000004/model")
    assert wrapper.step == 4


TWO_RANKS = textwrap.dedent("""
    import json, os, sys
    from functools import partial
    import torch
    from echomotion.diffusion.discriminator import VAEWithDiscriminator, build_discriminator
    from echomotion.diffusion.discriminator import vae_gan_loss
    from echomotion.diffusion.lpips import LPIPS
    from echomotion.diffusion.params import VAELossParams, VAEModelParams
    from echomotion.diffusion.vae import build_vae
    from echomotion.training.loop import train
    from echomotion.training.params import TrainParams

    rank = int(os.environ.get("RANK", 0))
    loss = VAELossParams(disc_weight=0.5, disc_start=1, disc_channels=8, disc_layers=2,
                         lpips_weight=1.0, lpips_weights="stand-in")
    torch.manual_seed(0)
    model = VAEWithDiscriminator(build_vae(VAEModelParams(block_out_channels=(8, 16),
                                 norm_num_groups=8)), build_discriminator(loss))
    lpips = LPIPS((4, 4, 8, 8, 8)).eval().requires_grad_(False)
    data = [{"image": torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(
        100 * rank + i)) * 2 - 1} for i in range(8)]
    train(model, data, partial(vae_gan_loss, params=loss, lpips=lpips),
          TrainParams(steps=3, batch_size=2, lr=1e-2, checkpoint_every=3, log_every=1),
          out_dir=sys.argv[1], seed=rank)
    sums = [p.detach().double().sum().item() for p in model.parameters()]
    world = os.environ.get("WORLD_SIZE", "1")
    json.dump({"sums": sums, "step": model.step},
              open(f"{sys.argv[2]}/rank{rank}-of-{world}.json", "w"))
""")


def test_two_ranks_stay_in_step_with_the_discriminator_and_the_adaptive_weight(tmp_path):
    """Different data per rank; after 3 steps (2 with the GAN and the adaptive weight's
    torch.autograd.grad) both ranks hold the same VAE and discriminator weights, which
    differ from a one-process run: gradients were averaged over ranks."""
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    for n in (2, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(n), str(script), str(tmp_path / f"out{n}"), str(tmp_path)]  # fmt: skip
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1, alone = (
        json.loads((tmp_path / f"{name}.json").read_text())
        for name in ("rank0-of-2", "rank1-of-2", "rank0-of-1")
    )
    assert rank0["step"] == rank1["step"] == 3
    assert rank0["sums"] == pytest.approx(rank1["sums"], rel=1e-6, abs=1e-7)
    assert rank0["sums"] != pytest.approx(alone["sums"], rel=1e-6, abs=1e-7)
