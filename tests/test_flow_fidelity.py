"""UnSAMFlow fidelity options of the flow network and its loss: PWC-Lite widths and the learned
upsampler, the loss schedule (resume-safe), RANSAC homographies, the augmentation
regulariser, occlusion scope, MedSAM box prompts and the paper preset's values."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from conftest import REPO, section
from echomotion.cli.preset import load_preset
from echomotion.flow.augment import (
    _view_inside,
    random_pair_transform,
    transform_flow,
    transform_pair,
)
from echomotion.flow.losses import (
    STEP_BUFFER,
    attach_step_counter,
    fit_segment_motion,
    loss_params_at,
    make_flow_loss,
    unsupervised_flow_loss,
)
from echomotion.flow.ops import backward_warp
from echomotion.flow.params import (
    FlowLossParams,
    LossStage,
    PWCLiteParams,
    SegmentParams,
    SpatialTransformParams,
)
from echomotion.flow.pwc import ConvexUpsampler, PWCLite
from echomotion.flow.segments import CombinedSegments, MedSamBoxSegments, make_segment_provider
from echomotion.params import validate_params
from echomotion.tasks.flow_train.params import FlowTrainParams
from echomotion.tasks.flow_train.run import train_flow
from echomotion.training.params import TrainParams

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "pyramid_channels": (8, 12, 16),
    "max_displacement": 2,
    "feature_channels": 8,
    "estimator_channels": (16, 12, 8),
    "context_channels": (12, 8),
    "context_dilations": (1, 2),
}


@pytest.fixture(scope="module")
def paper() -> FlowTrainParams:
    _, merged = load_preset("paper", REPO / "params.yaml")
    return validate_params(merged, "paper preset").flow_train


def texture(size: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture (size, size) float32 in [0.1, 0.9]."""
    t = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    t = cv2.GaussianBlur(t, (0, 0), 2.0)
    return 0.1 + 0.8 * (t - t.min()) / (t.max() - t.min())


def affine_pair(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """img1, img2 (1, 1, s, s) with img2 = img1 moved by a small affine map; flow_12."""
    a = texture(size, seed)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), 2.0, 1.02)
    m[:, 2] += (1.5, -1.0)
    b = cv2.warpAffine(a, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    fx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx
    fy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy
    flow = torch.from_numpy(np.stack([fx, fy]))[None].float()
    return torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], flow


# ---------------------------------------------------------------- network


def test_paper_network_matches_unsamflow_pwclite_and_trains_one_step(paper):
    """PWC-Lite of UnSAMFlow: 6 levels to stride 64, decoded to stride 4, convex x4
    upsampling; flows at strides 1..16 for w_ph_scales [1,1,1,1,0]; batch 1, 112 px."""
    torch.manual_seed(0)
    model = PWCLite(**paper.model.model_dump())
    assert model.stride == 64 and model.upsampler.factor == 4
    assert model.upsampler.mask[0][0].in_channels == 96  # the 128-128-128-96 context output
    assert [m[0].out_channels for m in model.estimator.body] == [128, 128, 96, 64, 32]
    img = torch.rand(1, 1, 112, 112)
    out = model(img, img.roll(1, -1))
    assert [tuple(f.shape[-2:]) for f in out.flows] == [
        (112, 112),
        (56, 56),
        (28, 28),
        (14, 14),
        (7, 7),
    ]
    assert out.flow is out.flows[0]
    attach_step_counter(model)
    loss_fn = make_flow_loss(paper.loss, paper.loss_schedule, paper.train.grad_accum)
    seg = (torch.arange(112 * 112).reshape(1, 112, 112) // 2000) + 1
    batch = {"img1": img, "img2": img.roll(1, -1), "segments1": seg, "segments2": seg}
    getattr(model, STEP_BUFFER).fill_(9000)  # the last stage: census, homography, AR
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    loss, logs = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and logs["ar"] > 0 and int(getattr(model, STEP_BUFFER)) == 9001


def test_reduce_estimator_reads_the_previous_two_outputs():
    model = PWCLite(**TINY | {"estimator_connectivity": "reduce"})
    widths = [layer[0].in_channels for layer in model.estimator.body]
    assert widths[1:] == [16, 16 + 12]
    assert model.estimator.predict.in_channels == 12 + 8
    out = model(torch.rand(2, 1, 40, 36), torch.rand(2, 1, 40, 36))
    assert out.flow.shape == (2, 2, 40, 36)


def test_convex_upsampler_keeps_a_constant_flow_inside_and_scales_it():
    torch.manual_seed(0)
    up = ConvexUpsampler(c_in=6, channels=8, factor=4)
    flow = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(1, 2, 6, 5)
    out = up(flow, torch.randn(1, 6, 6, 5))
    assert out.shape == (1, 2, 24, 20)
    inner = out[..., 4:-4, 4:-4]  # away from the zero-padded border neighbours
    expected = torch.tensor([6.0, -2.0]).view(1, 2, 1, 1).expand_as(inner)
    assert torch.allclose(inner, expected, atol=1e-5)


@pytest.mark.parametrize("level", [1, 2])
def test_output_level_and_learned_upsampler_give_full_resolution(level):
    model = PWCLite(**TINY | {"output_level": level, "learned_upsampler": True})
    out = model(torch.rand(1, 1, 50, 44), torch.rand(1, 1, 50, 44))
    strides = [50 // f.shape[-2] for f in out.flows]
    assert out.flow.shape == (1, 2, 50, 44) and len(out.flows) == 3 - level
    assert strides == [2**k for k in range(3 - level)]
    with pytest.raises(ValueError, match="output_level 3"):
        PWCLite(**TINY | {"output_level": 3})
    assert PWCLiteParams().output_level == 0 and not PWCLiteParams().learned_upsampler


# ---------------------------------------------------------------- schedule


def test_schedule_stages_apply_in_order_and_validate():
    base = FlowLossParams()
    stages = (LossStage(from_step=5, w_census=0.0, w_ar=0.02), LossStage(from_step=9, w_ar=0.1))
    assert loss_params_at(base, stages, 4) is base
    at5, at9 = loss_params_at(base, stages, 5), loss_params_at(base, stages, 9)
    assert (at5.w_census, at5.w_ar, at5.w_l1) == (0.0, 0.02, base.w_l1)
    assert (at9.w_census, at9.w_ar) == (0.0, 0.1)
    with pytest.raises(ValidationError, match="increase"):
        section("flow_train", loss_schedule=stages[::-1])
    with pytest.raises(ValidationError):
        LossStage(from_step=0, w_tern=1.0)
    params = section("flow_train", loss=FlowLossParams(w_segment=0.0), loss_schedule=stages)
    assert not params.needs_segments()
    late = (LossStage(from_step=3, w_segment=0.1),)
    assert section(
        "flow_train", loss=FlowLossParams(w_segment=0.0), loss_schedule=late
    ).needs_segments()


def test_scheduled_loss_reads_the_step_from_the_model_counter():
    torch.manual_seed(0)
    model = PWCLite(**TINY)
    img1, img2, _ = affine_pair(32)
    batch = {"img1": img1, "img2": img2}
    base = FlowLossParams(census_patch=5, pyramid_weights=(1.0, 1.0))
    stages = (LossStage(from_step=1, w_census=0.0, w_smooth=0.0),)
    loss_fn = make_flow_loss(base, stages, grad_accum=2)
    with pytest.raises(AttributeError, match="attach_step_counter"):
        loss_fn(model, batch)
    attach_step_counter(model)
    expected = [
        unsupervised_flow_loss(model, batch, p)[0]
        for p in (base, base, loss_params_at(base, stages, 1))
    ]
    got = [loss_fn(model, batch)[0] for _ in range(3)]  # micro-batches 0, 1 (step 0), 2 (step 1)
    assert [g.item() for g in got] == [e.item() for e in expected]
    assert got[0].item() != got[2].item() and int(getattr(model, STEP_BUFFER)) == 3


def _schedule_run(tiny_dataset, out: Path, steps: int) -> Path:
    params = section(
        "flow_train",
        model=PWCLiteParams(**TINY),
        loss=FlowLossParams(
            census_patch=5, pyramid_weights=(1.0, 1.0), w_segment=0.0, ar_mask=False
        ),
        loss_schedule=(LossStage(from_step=2, w_census=0.0, w_ar=0.5),),
        crop=32,
        eval_videos=0,
        train=TrainParams(steps=steps, batch_size=2, lr=2e-3, checkpoint_every=2, log_every=1),
    )
    train_flow(
        tiny_dataset["videos"], tiny_dataset["truth"], params,
        out_dir=out, log_file=out / "train.tsv", seed=0,
    )  # fmt: skip
    return out


def test_a_resumed_run_continues_the_schedule_exactly(tiny_dataset, tmp_path):
    """2 steps, then a second call to 4 steps: the same weights as 4 steps in one go, with
    the stage of step 2 (AR on) in force after the resume."""
    resumed = _schedule_run(tiny_dataset, tmp_path / "a", 2)
    resumed = _schedule_run(tiny_dataset, resumed, 4)
    straight = _schedule_run(tiny_dataset, tmp_path / "b", 4)
    a = load_file(next((resumed / "model").glob("*.safetensors")))
    b = load_file(next((straight / "model").glob("*.safetensors")))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a[STEP_BUFFER]) == 4
    rows = [line.split("\t") for line in (resumed / "train.tsv").read_text().splitlines()]
    ar = [float(r[rows[0].index("ar")]) for r in rows[1:]]
    assert ar[:2] == [0.0, 0.0] and all(v > 0 for v in ar[2:]) and len(ar) == 4
    assert PWCLite.from_pretrained(resumed / "model") is not None  # the counter is ignored


# ---------------------------------------------------------------- RANSAC


def _homography_flow(size: int) -> torch.Tensor:
    """Flow (1, 2, s, s) of a mild projective map."""
    hom = np.array([[1.02, 0.01, 1.0], [-0.015, 0.99, -0.5], [1e-4, -2e-4, 1.0]])
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    p = hom @ np.stack([xx.ravel(), yy.ravel(), np.ones(size * size)])
    u, v = (p[:2] / p[2]).reshape(2, size, size)
    return torch.from_numpy(np.stack([u - xx, v - yy]))[None].float()


def test_ransac_ignores_outliers_that_bias_least_squares():
    true = _homography_flow(32)
    g = torch.Generator().manual_seed(0)
    outlier = torch.rand(1, 1, 32, 32, generator=g) < 0.3
    flow = torch.where(outlier, true + 8 * torch.randn(1, 2, 32, 32, generator=g), true)
    segments = torch.ones(1, 32, 32, dtype=torch.long)
    lsq, _ = fit_segment_motion(flow, segments, model="homography")
    fits = [
        fit_segment_motion(
            flow, segments, None, "homography", 16, 0.5, 50, torch.Generator().manual_seed(1)
        )
        for _ in range(2)
    ]
    (ransac, member), (again, _) = fits
    assert torch.equal(ransac, again)  # deterministic under the generator's seed
    assert (ransac - true).abs().max() < 0.05 < (lsq - true).abs().max()
    assert member.min() == 1


def test_ransac_drops_segments_with_under_half_inliers_and_needs_homography():
    g = torch.Generator().manual_seed(2)
    flow = torch.cat(
        [_homography_flow(32)[..., :16], 6 * torch.randn(1, 2, 32, 16, generator=g)], -1
    )
    segments = torch.ones(1, 32, 32, dtype=torch.long)
    segments[..., 16:] = 2  # segment 2: pure noise
    _, member = fit_segment_motion(flow, segments, None, "homography", 16, 0.5, 50, g)
    assert member[..., :16].min() == 1 and member[..., 16:].max() == 0
    with pytest.raises(ValidationError, match="homography"):
        FlowLossParams(ransac_threshold=0.5)


# ---------------------------------------------------------------- augmentation regulariser


def test_transformed_flow_maps_the_transformed_views_onto_each_other():
    img1, img2, flow = affine_pair(48)
    assert (backward_warp(img2, flow) - img1)[..., 6:-6, 6:-6].abs().mean() < 0.01
    st = SpatialTransformParams(
        zoom=(1.1, 1.3, 0.97, 1.03), rotate=(-0.1, 0.1, -0.05, 0.05), noise_std=0.0
    )
    g = torch.Generator().manual_seed(3)
    view1, view2, new_flow, mask = transform_pair(img1, img2, flow, torch.ones_like(img1), st, g)
    err = (backward_warp(view2, new_flow) - view1).abs()[..., 6:-6, 6:-6]
    assert not torch.allclose(view1, img1, atol=0.05)  # a real transform
    assert err.mean() < 0.01 and mask.mean() > 0.9
    wrong = (backward_warp(view2, flow) - view1).abs()[..., 6:-6, 6:-6]
    assert wrong.mean() > 2 * err.mean()


def test_identity_transform_keeps_the_pair_and_official_ranges_stay_inside():
    _, _, flow = affine_pair(24)
    still = SpatialTransformParams(
        trans=(0.0, 0.0), zoom=(1, 1, 1, 1), rotate=(0, 0, 0, 0), hflip=False, noise_std=0.0
    )
    t = random_pair_transform(1, still, flow)
    assert torch.allclose(transform_flow(flow, t), flow, atol=1e-4)
    official = random_pair_transform(
        64, SpatialTransformParams(), flow, torch.Generator().manual_seed(0)
    )
    assert _view_inside(official.theta1).all() and _view_inside(official.theta2).all()
    flipped = (official.theta1[:, 0, 0] < 0).float().mean()
    assert 0.25 < flipped < 0.75


def test_ar_loss_runs_a_second_pass_only_when_weighted():
    torch.manual_seed(0)
    model = PWCLite(**TINY)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    img1, img2, _ = affine_pair(32)
    batch = {"img1": img1, "img2": img2}
    base = FlowLossParams(census_patch=5, pyramid_weights=(1.0, 1.0))
    _, logs0 = unsupervised_flow_loss(model, batch, base)
    assert len(calls) == 1 and "ar" not in logs0
    torch.manual_seed(1)
    with torch.no_grad():  # a nonzero network, so the AR target is not trivially met
        model.context.body[-1].bias.fill_(0.5)
    loss1, logs1 = unsupervised_flow_loss(
        model, batch, base.model_copy(update={"w_ar": 2.0, "ar_mask": False})
    )
    assert len(calls) == 3 and logs1["ar"] > 0
    plain = logs1["photometric"] + base.w_smooth * logs1["smooth"]
    assert loss1.item() == pytest.approx(plain + 2.0 * logs1["ar"], rel=1e-5)
    loss1.backward()
    assert model.context.body[-1].weight.grad.abs().sum() > 0


def test_photometric_occlusion_off_uses_every_pixel():
    torch.manual_seed(0)
    model = PWCLite(**TINY)
    with torch.no_grad():  # a large flow: most pixels leave the frame (occluded)
        model.context.body[-1].bias.fill_(6.0)
    img1, img2, _ = affine_pair(32)
    batch = {"img1": img1, "img2": img2}
    base = FlowLossParams(census_patch=5, pyramid_weights=(1.0,), w_smooth=0.0, w_segment=0.0)
    masked = unsupervised_flow_loss(model, batch, base)[1]
    unmasked = unsupervised_flow_loss(
        model, batch, base.model_copy(update={"photometric_occlusion": False})
    )[1]
    unmasked_no_occ = unsupervised_flow_loss(
        model, batch, base.model_copy(update={"occlusion": False})
    )[1]
    assert unmasked["photometric"] == pytest.approx(unmasked_no_occ["photometric"], rel=1e-6)
    assert masked["photometric"] != pytest.approx(unmasked["photometric"], rel=1e-3)
    assert unmasked["non_occluded"] == masked["non_occluded"] < 0.9  # the mask is still made


# ---------------------------------------------------------------- MedSAM box prompts


class _PromptEncoder(torch.nn.Module):
    """SAM's prompt-encoder interface: boxes (n, 1, 4) in 1024-px input coordinates."""

    def forward(self, points, boxes, masks):
        assert points is None and masks is None
        n = boxes.shape[0]
        return boxes.reshape(n, 2, 2), torch.zeros(n, 8, 64, 64)

    def get_dense_pe(self):
        return torch.zeros(1, 8, 64, 64)


class _MaskDecoder(torch.nn.Module):
    """SAM's mask-decoder interface: 256 x 256 logits, positive inside each prompt box."""

    def forward(
        self,
        image_embeddings,
        image_pe,
        sparse_prompt_embeddings,
        dense_prompt_embeddings,
        multimask_output,
    ):
        assert image_embeddings.shape == (1, 8, 64, 64) and not multimask_output
        boxes = sparse_prompt_embeddings.reshape(-1, 4) / 4  # 1024 -> 256 grid
        ys, xs = torch.meshgrid(torch.arange(256.0) + 0.5, torch.arange(256.0) + 0.5, indexing="ij")
        inside = [
            (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1) for x0, y0, x1, y1 in boxes.tolist()
        ]
        logits = torch.stack(inside).float()[:, None] * 20 - 10 + 0 * image_embeddings.mean()
        return logits, torch.zeros(len(boxes), 1)


class _StandInSam(torch.nn.Module):
    """Randomly initialised stand-in with SAM's predictor interface (image encoder 1024 -> 64)."""

    def __init__(self):
        super().__init__()
        self.image_encoder = torch.nn.Conv2d(3, 8, 16, stride=16)
        self.prompt_encoder = _PromptEncoder()
        self.mask_decoder = _MaskDecoder()


def _box_mask(box, size: int) -> np.ndarray:
    x0, y0, x1, y1 = (v * size / 112 for v in box)
    yy, xx = np.mgrid[:size, :size] + 0.5
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


@pytest.mark.parametrize("size", [112, 64])
def test_medsam_box_prompts_label_each_box_region(size):
    torch.manual_seed(0)
    provider = MedSamBoxSegments(_StandInSam())
    frame = (texture(size) * 255).astype(np.uint8)
    big = provider.preprocess(frame)
    assert big.shape == (1, 3, 1024, 1024) and big.min() == 0 and big.max() == 1
    labels = provider(frame[None])[0]
    boxes = SegmentParams().medsam_boxes
    assert labels.shape == (size, size) and labels.dtype == np.int64
    painted = np.zeros((size, size), dtype=np.int64)
    for k, box in enumerate(boxes, start=1):
        painted[_box_mask(box, size)] = k
    agreement = (labels == painted).mean()
    assert agreement > 0.97 and set(np.unique(labels)) == set(range(len(boxes) + 1))


def test_medsam_over_sam_and_without_the_package():
    medsam = MedSamBoxSegments(_StandInSam(), boxes=((0, 0, 56, 56),))

    def sam(frames: np.ndarray) -> np.ndarray:  # SAM labels: left half 1, right half 2
        return np.stack([np.where(np.arange(112)[None] < 56, 1, 2).repeat(112, 0)] * len(frames))

    labels = CombinedSegments(sam, medsam)(np.zeros((1, 112, 112), np.uint8) + 100)[0]
    assert labels[10, 10] == 3 and labels[100, 10] == 1 and labels[100, 100] == 2
    with pytest.raises(ValidationError, match="medsam_checkpoint"):
        SegmentParams(method="medsam")
    try:
        import segment_anything  # noqa: F401
    except ImportError:
        params = SegmentParams(method="medsam", medsam_checkpoint="missing.pth")
        with pytest.raises(ImportError, match="segment_anything"):
            make_segment_provider(params)


# ---------------------------------------------------------------- paper preset


def test_paper_preset_follows_the_official_unsamflow_run(paper):
    """LabelfreeMCDM UnSAMFlow/configs/echo_base.json, echo_aug+hg+mf.json and
    trainer/echo_trainer_ar.py (stages at iterations 3000 and 9000, see the preset)."""
    assert list(paper.model.pyramid_channels) == [16, 32, 64, 96, 128, 192]
    assert (paper.model.max_displacement, paper.model.learned_upsampler) == (4, True)
    loss = paper.loss
    assert (loss.w_census, loss.w_l1, loss.w_ssim, loss.w_smooth, loss.w_ar) == (
        0,
        0.15,
        0.85,
        0,
        0,
    )
    assert (loss.segment_model, loss.ransac_threshold, loss.photometric_occlusion) == (
        "homography",
        0.5,
        False,
    )
    assert list(loss.pyramid_weights) == [1, 1, 1, 1, 0]
    at = [loss_params_at(loss, paper.loss_schedule, s) for s in (2999, 3000, 9000)]
    assert (at[0].w_census, at[1].w_census, at[1].w_l1, at[1].w_ar) == (0, 1, 0, 0.02)
    assert (at[2].w_segment, at[2].w_ar, at[2].w_census) == (0.1, 0.1, 1)
    train = paper.train
    assert (train.optimizer, train.lr, train.weight_decay, train.max_grad_norm) == (
        "adam",
        2e-4,
        1e-6,
        10,
    )
    assert (train.batch_size, train.steps, train.ema_decay) == (128, 200_000, None)


def test_ransac_and_ar_run_under_bf16_autocast():
    torch.manual_seed(0)
    model = PWCLite(**TINY)
    img1, img2, _ = affine_pair(32)
    seg = torch.ones(1, 32, 32, dtype=torch.long)
    batch = {"img1": img1, "img2": img2, "segments1": seg, "segments2": seg}
    params = FlowLossParams(
        census_patch=5, pyramid_weights=(1.0, 1.0), segment_model="homography",
        ransac_threshold=0.5, ransac_iterations=8, w_ar=0.1, ar_mask=False,
    )  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = unsupervised_flow_loss(model, batch, params)
    loss.backward()
    assert torch.isfinite(loss) and "ar" in logs


def test_ed_es_pairs_are_the_traced_frames_in_either_order(tiny_dataset) -> None:
    """``edes_pair="ed_es"``: every item is the video's own ED->ES pair (UnSAMFlow's one
    pair per video), reversed half of the time; ``"mid"`` keeps today's mid->ED/ES pairs."""
    from echomotion.flow.pairs import FlowPairDataset
    from echomotion.stores.ragged import RaggedStore

    table = RaggedStore(tiny_dataset["videos"]).table
    data = FlowPairDataset(tiny_dataset["videos"], edes_fraction=1.0, edes_pair="ed_es", seed=0)
    orders = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        for i in range(len(data)):
            item = data[i]
            v = int(item["video"])
            ed, es = int(table["ed"][v]), int(table["es"][v])
            if ed < 0 or es < 0 or abs(ed - es) < 2:
                continue
            t = (int(item["t1"]), int(item["t2"]))
            assert set(t) == {ed, es}
            orders.add(t == (ed, es))
    assert orders == {True, False}
    mid = FlowPairDataset(tiny_dataset["videos"], edes_fraction=1.0, seed=0)
    pairs = [(int(mid[i]["t1"]), int(mid[i]["t2"])) for i in range(len(mid))]
    assert any(
        set(p) != {int(table["ed"][int(mid[i]["video"])]), int(table["es"][int(mid[i]["video"])])}
        for i, p in enumerate(pairs)
    )
    with pytest.raises(ValueError, match="edes_pair"):
        FlowPairDataset(tiny_dataset["videos"], edes_pair="es")
