"""MAFE as the official code runs it: the 3072-d motion vector from motion_ratio 1 and
EMA-VFI's fast flip TTA, the cosine schedule with its 2e-5 floor over 300 epochs, and the
best-VAL-PSNR checkpoint."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_tasks_mafe import write_fake_pseudo_stores

from conftest import REPO, section
from echomotion.cli.preset import load_preset
from echomotion.mafe.losses import mafe_loss
from echomotion.mafe.model import MAFE
from echomotion.mafe.params import MAFEModelParams
from echomotion.params import validate_params
from echomotion.tasks.features.run import pair_vectors
from echomotion.tasks.mafe_train.run import train_mafe
from echomotion.training.loop import lr_factor
from echomotion.training.params import TrainParams

TINY = MAFEModelParams(embed_dim=4, num_heads=(2, 2), window_size=4, reid_dim=16)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def paper():
    _, merged = load_preset("paper", REPO / "params.yaml")
    return validate_params(merged, "paper preset")


def twins(params: MAFEModelParams = TINY) -> tuple[MAFE, MAFE]:
    """The same weights with and without flip TTA."""
    torch.manual_seed(0)
    plain = MAFE.from_params(params).eval()
    tta = MAFE.from_params(params.model_copy(update={"flip_tta": True})).eval()
    tta.load_state_dict(plain.state_dict())
    return plain, tta


def frames(b: int, h: int, w: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, h, w, generator=g), torch.rand(b, 1, h, w, generator=g)


# -- the motion vector -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [(32, 32), (30, 26)])
@torch.no_grad()
def test_flip_tta_is_the_pair_then_the_rotated_pair(size):
    plain, tta = twins()
    img0, img1 = frames(3, *size)
    vec = tta.motion_vector(img0, img1)
    d = plain.motion_vector_dim
    assert vec.shape == (3, tta.motion_vector_dim) == (3, 2 * d)
    rotated = plain.motion_vector(img0.flip(-2, -1), img1.flip(-2, -1))
    assert torch.allclose(vec[:, :d], plain.motion_vector(img0, img1), atol=1e-6)
    assert torch.allclose(vec[:, d:], rotated, atol=1e-6)
    assert not torch.allclose(vec[:, :d], vec[:, d:], atol=1e-3)  # the rotation is seen


@torch.no_grad()
def test_a_pair_symmetric_under_rotation_gives_equal_halves():
    _, tta = twins()
    img0, img1 = frames(2, 32, 32)  # 32: a multiple of the stride, so no padding breaks it
    img0, img1 = img0 + img0.flip(-2, -1), img1 + img1.flip(-2, -1)
    vec = tta.motion_vector(img0 / 2, img1 / 2)
    d = vec.shape[1] // 2
    assert torch.allclose(vec[:, :d], vec[:, d:], atol=1e-5)


@torch.no_grad()
def test_without_tta_the_vector_is_the_plain_pooled_motion():
    plain, _ = twins()
    img0, img1 = frames(2, 32, 32)
    _, app, mot = plain.extract(plain.pad(img0), plain.pad(img1))
    assert torch.equal(plain.motion_vector(img0, img1), plain.pooled(mot))
    motion, appearance = pair_vectors(plain, img0, img1)
    assert torch.equal(motion, plain.pooled(mot)) and torch.equal(appearance, plain.pooled(app))


@torch.no_grad()
def test_features_with_tta_keep_the_pair_appearance():
    plain, tta = twins()
    img0, img1 = frames(2, 32, 32)
    motion, appearance = pair_vectors(tta, img0, img1)
    assert torch.allclose(motion, tta.motion_vector(img0, img1), atol=1e-6)
    assert appearance.shape == (2, tta.appearance_vector_dim)
    assert torch.allclose(appearance, plain.appearance_vector(img0, img1), atol=1e-6)


def test_flip_tta_travels_with_the_saved_model(tmp_path):
    _, tta = twins()
    tta.save_pretrained(tmp_path / "tta")
    assert MAFE.from_pretrained(tmp_path / "tta").motion_vector_dim == tta.motion_vector_dim
    # a MAFE saved before flip_tta existed loads without it
    config_path = tmp_path / "tta" / "config.json"
    config = json.loads(config_path.read_text())
    del config["flip_tta"]
    config_path.write_text(json.dumps(config))
    old = MAFE.from_pretrained(tmp_path / "tta")
    assert old.config.flip_tta is False and old.motion_vector_dim == tta.motion_vector_dim // 2


@pytest.mark.parametrize("flip_tta", [False, True])
@torch.no_grad()
def test_subtract_still_is_the_pair_minus_its_still_pairs(flip_tta):
    plain, _ = twins(TINY.model_copy(update={"flip_tta": flip_tta}))
    still = MAFE.from_params(TINY.model_copy(update={"flip_tta": flip_tta, "subtract_still": True}))
    still.load_state_dict(plain.state_dict())
    img0, img1 = frames(3, 30, 26)
    pair, appearance = pair_vectors(still, img0, img1)
    expected = plain.motion_vector(img0, img1) - 0.5 * (
        plain.motion_vector(img0, img0) + plain.motion_vector(img1, img1)
    )
    assert pair.shape == (3, plain.motion_vector_dim) == (3, still.motion_vector_dim)
    assert torch.allclose(pair, expected, atol=1e-5)
    assert torch.allclose(appearance, plain.appearance_vector(img0, img1), atol=1e-6)
    assert expected.abs().max() > 1e-3  # a moving pair keeps a vector
    # a still pair has no motion left, whatever its anatomy
    assert torch.allclose(still.motion_vector(img0, img0), torch.zeros_like(pair), atol=1e-5)


@torch.no_grad()
def test_subtract_still_per_call_overrides_the_config():
    """One model serves both vectors: the call's ``subtract_still`` wins over the config's."""
    plain, _ = twins(TINY)
    still = MAFE.from_params(TINY.model_copy(update={"subtract_still": True}))
    still.load_state_dict(plain.state_dict())
    img0, img1 = frames(2, 30, 26)
    assert torch.allclose(
        plain.motion_vector(img0, img1, subtract_still=True), still.motion_vector(img0, img1)
    )
    assert torch.allclose(
        still.motion_vector(img0, img1, subtract_still=False), plain.motion_vector(img0, img1)
    )
    assert not torch.allclose(plain.motion_vector(img0, img1), still.motion_vector(img0, img1))


def test_subtract_still_travels_with_the_saved_model(tmp_path):
    model = MAFE.from_params(TINY.model_copy(update={"subtract_still": True}))
    model.save_pretrained(tmp_path / "m")
    assert MAFE.from_pretrained(tmp_path / "m").config.subtract_still is True
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    del config["subtract_still"]  # a MAFE saved before the option existed
    config_path.write_text(json.dumps(config))
    assert MAFE.from_pretrained(tmp_path / "m").config.subtract_still is False


@pytest.mark.parametrize(
    ("update", "width"),
    [({}, 768), ({"flip_tta": True}, 1536), ({"motion_ratio": 1, "flip_tta": True}, 768)],
)
def test_derived_width_matches_the_model(update, width):
    params = MAFEModelParams().model_copy(update=update)
    assert params.motion_vector_dim == width == MAFE.from_params(params).motion_vector_dim


# -- the paper preset ------------------------------------------------------------------------


def test_paper_preset_gets_3072_from_ratio_1_and_flip_tta(paper):
    model = paper.mafe_train.model
    assert (model.motion_ratio, model.flip_tta, model.subtract_still) == (1, True, False)
    assert model.motion_vector_dim == 3072 == paper.mcdm_train.model.motion_dim


def test_paper_preset_follows_the_official_mafe_schedule(paper):
    """train_echo_flow.py: cosine 2e-4 -> 2e-5 over 300 epochs of ~933 steps, 100 epochs
    trained, VAL PSNR every 3 epochs with the best kept."""
    train = paper.mafe_train.train
    assert (train.lr_schedule, train.lr, train.lr_min) == ("cosine", 2e-4, 2e-5)
    assert train.schedule_steps == 300 * 933 and train.checkpoint_every == 3 * 933
    assert (train.best_metric, train.best_mode) == ("psnr", "max")
    last = train.lr * lr_factor(train)(train.steps - 1)
    assert last == pytest.approx(1.56e-4, rel=5e-3)  # the official run ends far above 2e-5


def test_paper_mafe_with_tta_runs_one_step_at_paper_shapes(paper):
    torch.manual_seed(0)
    model = MAFE.from_params(paper.mafe_train.model)
    size = paper.prepare.size
    img0, img1, gt = (torch.rand(1, 1, size, size) for _ in range(3))
    model.eval()
    with torch.no_grad():
        assert model.motion_vector(img0, img1).shape == (1, 3072)
    model.train()
    batch = {
        "img0": img0, "img1": img1, "gt": gt, "timestep": torch.tensor([0.5]),
        "flow": torch.zeros(1, 4, size, size), "reid": torch.randn(1, 2, model.config.reid_dim),
    }  # fmt: skip
    loss, logs = mafe_loss(model, batch, paper.mafe_train.loss)
    loss.backward()
    torch.optim.AdamW(model.parameters(), lr=paper.mafe_train.train.lr).step()
    assert torch.isfinite(loss) and set(logs) >= {"interp", "flow", "reid"}


# -- best VAL PSNR ---------------------------------------------------------------------------


def test_mafe_train_keeps_the_best_val_psnr(tiny_dataset, tmp_path):
    pseudo = write_fake_pseudo_stores(tiny_dataset["videos"], tmp_path / "pseudo", 16)
    train = TrainParams(
        steps=4, batch_size=3, lr=3e-2, checkpoint_every=1, log_every=1,
        best_metric="psnr", best_mode="max",
    )  # fmt: skip
    params = section("mafe_train", model=TINY, train=train, eval_batch_size=4)
    metrics = train_mafe(
        tiny_dataset["videos"], pseudo["flow"], pseudo["reid"], params,
        out_dir=tmp_path / "mafe", seed=0, log_file=tmp_path / "plots" / "train.tsv",
    )  # fmt: skip
    with (tmp_path / "plots" / "eval.tsv").open() as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f, delimiter="\t")]
    best = max(rows, key=lambda r: r["psnr"])
    assert metrics["best"]["step"] == int(best["step"])
    assert metrics["best"]["value"] == pytest.approx(best["psnr"], abs=1e-5)  # TSV rounds
    assert metrics["val"]["psnr"] == pytest.approx(best["psnr"], abs=1e-5)  # model/ is the best
    assert abs(rows[-1]["psnr"] - best["psnr"]) > 0.1  # the last weights would score otherwise
