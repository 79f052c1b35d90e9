"""The paper-scale preset: one command applies it, and every model it describes builds
and runs one forward pass at the paper's shapes (CPU, batch 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO
from echomotion.cli.preset import dvc_args, load_preset
from echomotion.params import validate_params


@pytest.fixture(scope="module")
def paper():
    _, merged = load_preset("paper", REPO / "params.yaml")
    return validate_params(merged, "paper preset")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_preset_states_the_paper_configuration(paper):
    assert paper.prepare.target_fps == 16.0 and paper.mcdm_train.model.num_frames == 64
    assert paper.mafe_train.model.embed_dim == 32
    assert list(paper.mafe_train.model.depths) == [2, 2, 2, 4, 4]
    assert list(paper.mcdm_train.model.block_out_channels) == [128, 256, 256, 512]
    assert paper.mcdm_train.train.batch_size == 16 and paper.mcdm_train.train.steps == 1_000_000
    assert (paper.sample.scheduler, paper.sample.num_inference_steps) == ("ddpm", 128)
    # untouched keys come from params.yaml
    assert paper.shared.seed == yaml.safe_load((REPO / "params.yaml").read_text())["shared"]["seed"]


def test_preset_follows_the_official_code_where_a_param_exists(paper):
    """Values read in ZheLi2020/LabelfreeMCDM (configs/default_uncondition.yaml,
    MAFE/train_echo_flow.py) and the EchoNet-Synthetic VAE config; README fidelity table."""
    mcdm = paper.mcdm_train
    heads = [c // mcdm.model.attention_head_dim for c in mcdm.model.block_out_channels]
    assert heads == [8, 16, 16, 32]
    assert (mcdm.train.lr, mcdm.train.lr_schedule, mcdm.train.warmup_steps) == (
        1e-4,
        "constant",
        500,
    )
    assert (mcdm.train.weight_decay, mcdm.train.mixed_precision) == (0.01, "fp16")
    assert (mcdm.loss.noise_offset, mcdm.loss.cond_dropout, mcdm.loss.snr_gamma) == (0.1, 0.0, None)
    # the CPU default diffuses a residual and samples with guidance; the preset undoes both
    # (trained without motion dropout, its model has no unconditional branch for guidance)
    assert not mcdm.model.residual and paper.sample.guidance_scale == 1.0
    mafe = paper.mafe_train
    assert (mafe.train.batch_size, mafe.train.steps, mafe.loss.pyramid_levels) == (8, 93000, 4)
    assert (mafe.train.lr, mafe.train.weight_decay, mafe.train.warmup_steps) == (2e-4, 1e-4, 2000)
    assert list(paper.vae_train.model.block_out_channels) == [128, 256, 256, 512]


def test_preset_command_prints_dvc_set_params():
    out = subprocess.run(
        [sys.executable, "-m", "echomotion.cli.preset", "paper"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    pairs = dict(zip(out[1::2], out[::2], strict=True))
    assert set(pairs.values()) == {"-S"}
    assert "mcdm_train.model.motion_dim=3072" in pairs
    assert "prepare.target_fps=16.0" in pairs
    assert dvc_args({"a": {"b": [1, 2]}}) == ["-S", "a.b=[1,2]"]


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_dvc_applies_the_preset_command_to_exactly_the_merged_params(tmp_path, name):
    """The `-S` pairs go through DVC's own override parser (Hydra's grammar: lists of
    dicts, URLs, nulls) and give the params the preset describes, value for value."""
    from dvc.utils.hydra import apply_overrides

    override, merged = load_preset(name, REPO / "params.yaml")
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    base = yaml.safe_load(params.read_text())
    args = dvc_args(override, base)
    assert args[::2] == ["-S"] * (len(args) // 2)
    apply_overrides(str(params), args[1::2])
    applied = validate_params(yaml.safe_load(params.read_text()), name)
    assert applied == validate_params(merged, name)
    assert applied != validate_params(base, name)  # the preset changed something


def test_unknown_preset_and_bad_values_are_refused(tmp_path):
    from echomotion.params import ParamsError

    with pytest.raises(ParamsError, match="no such preset"):
        load_preset("nope", REPO / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcdm_train:\n  model:\n    num_frame: 3\n")
    with pytest.raises(ParamsError, match=r"mcdm_train\.model\.num_frame"):
        load_preset(str(bad), REPO / "params.yaml")


@torch.no_grad()
def test_every_paper_model_runs_at_paper_shapes(paper):
    from echomotion.diffusion.conditioning import added_time_ids
    from echomotion.diffusion.unet import build_unet, unet_predict
    from echomotion.diffusion.vae import build_vae
    from echomotion.flow.pwc import PWCLite
    from echomotion.mafe.model import MAFE
    from echomotion.tasks.reid_train.run import build_encoder

    size = paper.prepare.size
    frame = torch.rand(1, 1, size, size)
    # pseudo labels
    flow = PWCLite(**paper.flow_train.model.model_dump()).eval()
    assert flow(frame, frame).flow.shape == (1, 2, size, size)
    reid = build_encoder(paper.reid_train.model, num_identities=7465, seed=0).eval()
    assert reid.embed(frame).shape == (1, paper.reid_train.model.embedding_dim)
    # MAFE: 3072-d motion vectors
    mafe = MAFE.from_params(paper.mafe_train.model).eval()
    motion = mafe.motion_vector(frame, frame)
    assert motion.shape == (1, 3072) == (1, paper.mcdm_train.model.motion_dim)
    # VAE: 112 -> 14
    vae = build_vae(paper.vae_train.model).eval()
    latent = vae.encode(frame * 2 - 1).latent_dist.mode()
    assert latent.shape == (1, 4, size // 8, size // 8)
    # MCDM: a 64-frame window of 14x14 latents, motion as cross-attention context
    unet = build_unet(paper.mcdm_train.model).eval()
    frames = paper.mcdm_train.model.num_frames
    noisy = torch.randn(1, frames, 4, size // 8, size // 8)
    ids = added_time_ids(torch.tensor([16.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    out = unet_predict(unet, noisy, latent, motion, ids, torch.tensor([500]))
    assert out.shape == noisy.shape and torch.isfinite(out).all()
