"""The Siamese ReID method (EchoNet-Synthetic privacy network) beside the BNNeck one:
balanced seeded frame pairs, the pair head and its loss, the stage on the tiny dataset
with the same retrieval metrics, and the model at the paper preset's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from conftest import REPO, section
from echomotion.cli.preset import load_preset
from echomotion.params import validate_params
from echomotion.reid.losses import siamese_loss, split_pairs
from echomotion.reid.model import ReIDEncoder, SiameseReIDEncoder, load_reid_encoder
from echomotion.reid.pairs import PairBatchSampler
from echomotion.reid.params import ReIDModelParams
from echomotion.stores.ragged import RaggedStore
from echomotion.tasks.reid_export.run import export_reid, load_encoder, untrained_like
from echomotion.tasks.reid_train.params import ReIDTrainParams
from echomotion.tasks.reid_train.run import build_encoder, train_reid
from echomotion.training.params import TrainParams

pytestmark = pytest.mark.usefixtures("one_thread")

SEED = 5
TINY = ReIDModelParams(widths=(8, 16), blocks=(1, 1), stem_stride=2, embedding_dim=16)
# 6 identities of 3, 4, 5, 6, 7, 8 items
LABELS = np.repeat(np.arange(6), np.arange(3, 9))


# ----------------------------------------------------------------------------- pair sampler


def pairs_of(batch: list[int]) -> list[tuple[int, int]]:
    n = len(batch) // 2
    return list(zip(batch[:n], batch[n:], strict=True))


def test_pairs_are_balanced_positive_then_negative():
    sampler = PairBatchSampler(LABELS, pairs=4, seed=1, positive_fraction=0.5)
    assert len(sampler) == 2  # 6 anchors wrapped to 2 batches of 4
    for batch in sampler.epoch_batches(0):
        assert len(batch) == 8
        pairs = pairs_of(batch)
        for a, b in pairs[:2]:  # positives: two distinct frames of one video
            assert LABELS[a] == LABELS[b] and a != b
        for a, b in pairs[2:]:  # negatives: frames of two videos
            assert LABELS[a] != LABELS[b]
    # one pass over the identities as anchors (wrapped): every video anchors a pair
    anchors = [LABELS[a] for batch in sampler.epoch_batches(0) for a, _ in pairs_of(batch)]
    assert set(anchors) == set(range(6))


def test_pairs_are_a_function_of_seed_and_epoch():
    one = PairBatchSampler(LABELS, pairs=3, seed=7)
    assert one.epoch_batches(0) == PairBatchSampler(LABELS, pairs=3, seed=7).epoch_batches(0)
    assert one.epoch_batches(0) != one.epoch_batches(1)
    assert one.epoch_batches(0) != PairBatchSampler(LABELS, pairs=3, seed=8).epoch_batches(0)
    # resuming mid-epoch draws the same batches as the uninterrupted epoch
    one.set_epoch(1, start_batch=1)
    assert list(one) == one.epoch_batches(1)[1:]


def test_pair_batches_are_sharded_across_ranks():
    whole = PairBatchSampler(LABELS, pairs=2, seed=3).epoch_batches(0)
    ranks = [PairBatchSampler(LABELS, pairs=2, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert [len(r) for r in ranks] == [2, 2]  # 6 anchors wrapped to 4 global batches
    assert ranks[0].epoch_batches(0)[0] == whole[0] and ranks[1].epoch_batches(0)[0] == whole[1]


def test_positive_fraction_sets_the_count_and_bad_inputs_are_refused():
    for fraction, n_pos in ((0.0, 0), (0.25, 1), (1.0, 4)):
        batch = PairBatchSampler(LABELS, pairs=4, positive_fraction=fraction).epoch_batches(0)[0]
        assert sum(LABELS[a] == LABELS[b] for a, b in pairs_of(batch)) == n_pos
    with pytest.raises(ValueError, match="2 identities"):
        PairBatchSampler(np.zeros(5), pairs=2)
    with pytest.raises(ValueError, match="pairs"):
        PairBatchSampler(LABELS, pairs=0)


# ----------------------------------------------------------------------------- model and loss


def tiny_siamese(seed: int = 0) -> SiameseReIDEncoder:
    return build_encoder(TINY, num_identities=3, seed=seed, method="siamese")


def test_build_encoder_keeps_bnneck_by_default_and_shares_the_trunk_init():
    bnneck = build_encoder(TINY, num_identities=3, seed=SEED)
    assert type(bnneck) is ReIDEncoder
    torch.manual_seed(SEED)
    direct = ReIDEncoder(**TINY.model_dump(), num_identities=3)
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in bnneck.state_dict().items())
    siamese = build_encoder(TINY, num_identities=3, seed=SEED, method="siamese")
    assert type(siamese) is SiameseReIDEncoder and not hasattr(siamese, "classifier")
    trunk = [k for k in siamese.state_dict() if k.startswith(("stem.", "stages.", "project."))]
    assert trunk and all(
        torch.equal(siamese.state_dict()[k], bnneck.state_dict()[k]) for k in trunk
    )
    with pytest.raises(ValueError, match="unknown ReID method"):
        build_encoder(TINY, num_identities=3, seed=SEED, method="arcface")


@torch.no_grad()
def test_siamese_features_embedding_and_pair_logits():
    model = tiny_siamese().eval()
    x, y = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    out = model(x, y)
    assert out["features"].shape == (3, 16) and out["logits"].shape == (3,)
    assert ((out["features"] > 0) & (out["features"] < 1)).all()  # sigmoid features
    emb = model.embed(x)
    assert torch.allclose(emb, F.normalize(out["features"], dim=1))
    assert torch.allclose(emb.norm(dim=1), torch.ones(3))
    # |f1 - f2| is symmetric, and a frame paired with itself scores the head's bias
    assert torch.allclose(model(y, x)["logits"], out["logits"])
    assert torch.allclose(model(x, x)["logits"], model.pair_head.bias.expand(3))
    with pytest.raises(ValueError, match="frames"):
        model(torch.rand(2, 3, 32, 32))


def test_siamese_loss_is_bce_on_same_video_targets_and_trains():
    model = tiny_siamese()
    images = torch.rand(8, 1, 32, 32)
    identity = torch.tensor([0, 1, 2, 0, 0, 2, 2, 1])  # pairs (0,0) (1,2) (2,2) (0,1)
    batch = {"image": images, "identity": identity}
    first, second, same = split_pairs(batch)
    assert torch.equal(same, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert torch.equal(first, images[:4]) and torch.equal(second, images[4:])
    model.eval()  # BatchNorm with running stats: the same logits twice
    loss, logs = siamese_loss(model, batch)
    logits = model(images[:4], images[4:])["logits"]
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, same).item())
    assert logs["positive_fraction"] == 0.5 and 0.0 <= logs["pair_accuracy"] <= 1.0
    loss.backward()
    assert model.pair_head.weight.grad.abs().sum() > 0 and model.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="even"):
        split_pairs({"image": images[:3], "identity": identity[:3]})


def test_load_reid_encoder_picks_the_saved_class(tmp_path):
    for model in (build_encoder(TINY, 3, SEED), tiny_siamese(SEED)):
        model.save_pretrained(tmp_path / type(model).__name__)
        loaded = load_reid_encoder(tmp_path / type(model).__name__)
        assert type(loaded) is type(model) and not loaded.training
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
        fresh = untrained_like(loaded, SEED)
        assert type(fresh) is type(model)
        assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())


def test_method_param_and_its_batch_rule():
    train = TrainParams(steps=1, batch_size=6, lr=1e-3, checkpoint_every=1)
    with pytest.raises(ValidationError, match="multiple of instances"):
        section("reid_train", train=train, instances=4)
    siamese = section("reid_train", method="siamese", train=train, instances=4)  # 6 pairs
    assert siamese.pairs.positive_fraction == 0.5
    assert section("reid_train").method == "bnneck"
    with pytest.raises(ValidationError):
        section("reid_train", method="arcface")


# ----------------------------------------------------------------------------- the stages


def test_siamese_stage_trains_and_exports_the_same_metrics(tiny_dataset, tmp_path):
    train = TrainParams(steps=2, batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1)
    params = section("reid_train", method="siamese", model=TINY, frames_per_video=10, train=train)
    out = tmp_path / "models" / "reid"
    log = tmp_path / "train.tsv"
    report = train_reid(tiny_dataset["videos"], params, out_dir=out, seed=SEED, log_file=log)
    assert report.result.step == 2
    assert {"loss", "pair_accuracy", "positive_fraction"} <= set(report.as_dict()["final"])
    assert report.as_dict()["final"]["positive_fraction"] == 0.5
    model = load_encoder(out / "model")
    assert type(model) is SiameseReIDEncoder and model.config.num_identities == 6
    export = section("reid_export", eval_frames=4, pixel_size=8, batch_size=16)
    store = tmp_path / "reid.zarr"
    metrics = export_reid(tiny_dataset["videos"], out, store, export, seed=SEED)
    for method in ("trained", "untrained", "pixels", "chance"):
        assert set(metrics[method]) == {"rank1", "mAP"}
        assert all(0.0 <= v <= 1.0 for v in metrics[method].values())
    assert metrics["chance"]["rank1"] == pytest.approx(3 / 7)
    emb = np.asarray(RaggedStore(store).array("embedding")[:])
    assert emb.shape == (8, 2, 16)
    assert np.allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- paper shapes


def test_siamese_paper_shape_one_training_step():
    """The paper preset's ReID trunk with the Siamese head: one Adam step on one pair of
    frames at the preset's size (batch 1), then a (1, D) embedding."""
    _, merged = load_preset("paper", REPO / "params.yaml")
    paper = validate_params(merged, "paper preset")
    section = ReIDTrainParams.model_validate(paper.reid_train.model_dump() | {"method": "siamese"})
    model = build_encoder(section.model, num_identities=7465, seed=0, method=section.method)
    size = paper.prepare.size
    batch = {"image": torch.rand(2, 1, size, size), "identity": torch.tensor([3, 3])}
    before = model.pair_head.weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)  # official optimizer and lr
    loss, logs = siamese_loss(model.train(), batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and logs["positive_fraction"] == 1.0
    assert not torch.equal(before, model.pair_head.weight)
    emb = model.eval().embed(torch.rand(1, 1, size, size))
    assert emb.shape == (1, paper.reid_train.model.embedding_dim)
