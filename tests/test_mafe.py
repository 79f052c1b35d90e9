"""MAFE: shapes at the CPU and paper sizes, save/load, attention, losses, learning."""

from __future__ import annotations

import pydantic
import pytest
import torch

from echomotion.mafe.attention import (
    InterFrameAttention,
    MotionFormerBlock,
    coordinate_grid,
    window_attention_mask,
)
from echomotion.mafe.losses import flow_loss, laplacian_l1, mafe_loss, reid_loss
from echomotion.mafe.model import MAFE, PAPER_MAFE
from echomotion.mafe.params import MAFELossParams, MAFEModelParams

TINY = MAFEModelParams(
    embed_dim=4, depths=(1, 1, 2, 2), num_heads=(1, 2), window_size=4, reid_dim=8
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> MAFE:
    torch.manual_seed(0)
    return MAFE.from_params(TINY).eval()


def pair(b: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, h, w, generator=g), torch.rand(b, 1, h, w, generator=g)


def check_outputs(out: dict, b: int, h: int, w: int, n_stages: int, reid_dim: int) -> None:
    assert out["pred"].shape == (b, 1, h, w)
    assert out["flows"].shape == (b, 4, h, w)
    assert out["mask"].shape == (b, 1, h, w)
    assert out["flow_from_motion"].shape == (b, 4, h, w)
    assert out["embedding_from_appearance"].shape == (b, 2, reid_dim)
    assert len(out["motion_features"]) == len(out["appearance_features"]) == n_stages
    assert all(f.shape[:2] == (b, 2) for f in out["motion_features"])
    assert out["pred"].min() >= 0 and out["pred"].max() <= 1
    assert torch.isfinite(out["flows"]).all()


@pytest.mark.parametrize("size", [(112, 112), (50, 38)])
def test_cpu_default_shapes(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    params = MAFEModelParams()
    model = MAFE.from_params(params).eval()
    img0, img1 = pair(2, *size)
    with torch.no_grad():
        out = model(img0, img1, timestep=torch.tensor([0.5, 0.25]))
        vec = model.motion_vector(img0, img1)
    check_outputs(out, 2, *size, len(params.num_heads), params.reid_dim)
    # 2 frames * motion_ratio 2 * (64 + 128) channels of the last two stages
    assert vec.shape == (2, model.motion_vector_dim) == (2, 768)


def test_paper_configuration_gives_3072_d_motion_vectors() -> None:
    torch.manual_seed(0)
    model = MAFE.from_params(PAPER_MAFE).eval()
    img0, img1 = pair(1, 112, 112)
    with torch.no_grad():
        out = model(img0, img1)
        motion = model.motion_vector(img0, img1)
        appearance = model.appearance_vector(img0, img1)
    check_outputs(out, 1, 112, 112, 2, PAPER_MAFE.reid_dim)
    # stage widths 256 and 512 at 14x14 and 7x7; motion widths 1 * 256 and 1 * 512
    assert [f.shape[2:] for f in out["motion_features"]] == [(256, 14, 14), (512, 7, 7)]
    assert motion.shape == (1, 3072) and appearance.shape == (1, 1536)
    # the first half is the global average of the last two stages' motion features of the
    # pair, the second half that of the pair rotated by 180 degrees (flip TTA)
    mf = out["motion_features"]
    expected = torch.cat([f[:, k].mean((-2, -1)) for f in mf for k in (0, 1)], dim=1)
    assert torch.allclose(motion[:, :1536], expected, atol=1e-5)
    rotated = model.motion_vector(img0.flip(-2, -1), img1.flip(-2, -1))
    assert torch.allclose(motion[:, 1536:], rotated[:, :1536], atol=1e-5)


def test_save_and_load_round_trip(tiny: MAFE, tmp_path) -> None:
    tiny.save_pretrained(tmp_path)
    loaded = MAFE.from_pretrained(tmp_path).eval()
    img0, img1 = pair(1, 32, 32)
    with torch.no_grad():
        a, b = tiny(img0, img1), loaded(img0, img1)
    assert list(loaded.config.depths) == list(TINY.depths)
    for key in ("pred", "flows", "mask", "flow_from_motion", "embedding_from_appearance"):
        assert torch.equal(a[key], b[key]), key


def test_bad_configuration_and_inputs_are_rejected(tiny: MAFE) -> None:
    with pytest.raises(pydantic.ValidationError, match="num_heads"):
        MAFEModelParams(embed_dim=8, depths=(1, 1), num_heads=(1, 1))
    with pytest.raises(pydantic.ValidationError, match="divide evenly"):
        MAFEModelParams(embed_dim=6, depths=(1, 1, 1), num_heads=(5,))
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32\) and \(1, 1, 32, 30\)"):
        tiny(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 30))


def identity_attention(dim: int, sharpness: float) -> InterFrameAttention:
    """Attention whose queries/keys/values are the tokens and whose motion is the displacement."""
    attn = InterFrameAttention(dim, motion_dim=2, num_heads=1)
    with torch.no_grad():
        for lin, weight in [
            (attn.q, sharpness * torch.eye(dim)),
            (attn.kv, torch.cat([torch.eye(dim), torch.eye(dim)])),
            (attn.cor_embed, torch.eye(2)),
            (attn.motion_proj, torch.eye(2)),
            (attn.proj, torch.eye(dim)),
        ]:
            lin.weight.copy_(weight)
            lin.bias.zero_()
    return attn


@pytest.mark.parametrize("shift", [0, 2])
def test_motion_feature_is_the_attended_displacement(shift: int) -> None:
    """One 7x7 window, distinct tokens; frame 1 = frame 0 moved ``shift`` columns right."""
    torch.manual_seed(0)
    n, dim = 7, 32
    tokens = torch.nn.functional.normalize(torch.randn(n, n, dim), dim=-1)
    moved = torch.roll(tokens, shifts=shift, dims=1)
    attn = identity_attention(dim, sharpness=100.0)
    cor = coordinate_grid(n, n, n, n, torch.device("cpu")).reshape(1, n * n, 2)
    with torch.no_grad():
        appearance, motion = attn(tokens.reshape(1, -1, dim), moved.reshape(1, -1, dim), cor)
    motion = motion.reshape(n, n, 2)[:, : n - shift]  # columns whose match is in the window
    assert torch.allclose(motion[..., 0], torch.full_like(motion[..., 0], 2 * shift / n), atol=1e-3)
    assert motion[..., 1].abs().max() < 1e-3
    # the appearance feature gathers the matching token of the other frame
    gathered = appearance.reshape(n, n, dim)[:, : n - shift]
    assert torch.allclose(gathered, tokens[:, : n - shift], atol=1e-3)


def test_window_mask_blocks_padding_and_wrapped_tokens() -> None:
    assert window_attention_mask(8, 8, 4, 0, torch.device("cpu")) is None
    padded = window_attention_mask(6, 8, 4, 0, torch.device("cpu"))  # rows 6, 7 are padding
    assert padded is not None and padded.shape == (4, 16, 16)
    # window 2 (rows 4-7, cols 0-3): real query (4, 0) may not see padded key (6, 0)
    assert not padded[2, 0, 8] and padded[2, 0, 4]
    shifted = window_attention_mask(8, 8, 4, 2, torch.device("cpu"))
    assert shifted is not None and shifted.diagonal(dim1=1, dim2=2).all()
    assert not shifted.all()


def test_shifted_block_never_mixes_opposite_borders() -> None:
    torch.manual_seed(0)
    block = MotionFormerBlock(8, 4, 2, window_size=4, shift=True, mlp_ratio=2.0).eval()
    x = torch.randn(2, 8, 8, 8)  # (2B, H, W, C)
    far, near = x.clone(), x.clone()
    kick = 3 * torch.randn(8)  # not a constant: LayerNorm would remove that
    far[:, -1, -1] += kick  # bottom-right corner: shares a shifted window with (0, 0) by wrapping
    near[:, 1, 1] += kick
    with torch.no_grad():
        out, motion = block(x)
        out_far, motion_far = block(far)
        out_near, _ = block(near)
    assert torch.allclose(out[:, 0, 0], out_far[:, 0, 0], atol=1e-6)
    assert torch.allclose(motion[:, 0, 0], motion_far[:, 0, 0], atol=1e-6)
    assert not torch.allclose(out[:, 0, 0], out_near[:, 0, 0], atol=1e-3)


def test_loss_terms() -> None:
    torch.manual_seed(0)
    img, other = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    assert laplacian_l1(img, img) == 0
    assert laplacian_l1(img, other) > 0.05
    assert laplacian_l1(img, img + 0.1) > 0.05  # the low-pass residual sees a brightness change
    flow = torch.randn(2, 4, 32, 32)
    for kind in ("l1", "charbonnier"):
        assert flow_loss(flow, flow, kind) == 0
        assert flow_loss(flow, flow + 1, kind) > 0.9
    emb = torch.randn(2, 2, 8)
    assert reid_loss(emb, emb, "mse") == 0
    assert reid_loss(3 * emb, emb, "cosine").abs() < 1e-6  # cosine ignores the scale
    assert reid_loss(-emb, emb, "cosine") == pytest.approx(2.0)


def make_batch(model: MAFE, b: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    """A fixed tiny batch: a blurred texture moving right; pseudo flow and ReID to match."""
    torch.manual_seed(1)
    base = torch.nn.functional.avg_pool2d(torch.rand(b, 1, size + 8, size + 8), 5, 1, 2)
    frames = [base[..., 4:-4, 4 + s : 4 + s + size] for s in (-2, 0, 2)]  # ED, mid, ES
    flow = torch.tensor([2.0, 0.0, -2.0, 0.0]).view(1, 4, 1, 1).expand(b, 4, size, size)
    reid = torch.randn(b, 2, model.config.reid_dim)
    return {"img0": frames[0], "gt": frames[1], "img1": frames[2], "flow": flow, "reid": reid}


def test_mafe_loss_combines_its_terms(tiny: MAFE) -> None:
    batch = make_batch(tiny)
    with torch.no_grad():
        loss0, logs = mafe_loss(tiny, batch, MAFELossParams(flow_ratio=0, reid_ratio=0))
        loss1, _ = mafe_loss(tiny, batch, MAFELossParams(flow_ratio=1, reid_ratio=2))
    assert set(logs) == {"loss", "interp", "coarse", "flow", "reid"}
    assert loss0.item() == pytest.approx(logs["interp"] + 0.5 * logs["coarse"], rel=1e-5)
    assert (loss1 - loss0).item() == pytest.approx(logs["flow"] + 2 * logs["reid"], rel=1e-4)
    with pytest.raises(ValueError, match="reid"):
        mafe_loss(tiny, {k: v for k, v in batch.items() if k != "reid"})


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = MAFE.from_params(TINY).train()
    batch = make_batch(model)
    params = MAFELossParams(flow_ratio=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, _ = mafe_loss(model, batch, params)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
