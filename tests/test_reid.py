"""Tests of the ReID package: model, losses, P x K sampler, retrieval metrics, dataset."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.utils.data import DataLoader

from echomotion.reid.dataset import FrameIdentityDataset
from echomotion.reid.losses import batch_hard_triplet_loss, reid_loss
from echomotion.reid.metrics import expected_random_ap, rank1_and_map
from echomotion.reid.model import ReIDEncoder
from echomotion.reid.params import ReIDLossParams
from echomotion.reid.sampler import PKBatchSampler

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = {
    "widths": (8, 16, 32),
    "blocks": (1, 1, 1),
    "stem_stride": 1,
    "embedding_dim": 32,
    "num_identities": 6,
}


# ----------------------------------------------------------------------------- model


def test_forward_shapes_and_normalised_embedding():
    torch.manual_seed(0)
    model = ReIDEncoder(**TINY)
    out = model(torch.rand(5, 1, 24, 20))
    assert out["features"].shape == (5, 32)
    assert out["embedding"].shape == (5, 32)
    assert out["logits"].shape == (5, 6)
    model.eval()
    emb = model.embed(torch.rand(3, 1, 24, 20))
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))


def test_default_model_is_small_and_rejects_bad_inputs():
    model = ReIDEncoder(num_identities=10)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1e5 < n_params < 1e6
    with pytest.raises(ValueError, match="expected"):
        model(torch.rand(2, 3, 32, 32))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="same length"):
        ReIDEncoder(widths=(8, 16), blocks=(1,))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ReIDEncoder(**TINY)
    model(torch.rand(8, 1, 16, 16))  # move the BatchNorm running statistics off their init
    model.eval()
    model.save_pretrained(tmp_path / "reid")
    loaded = ReIDEncoder.from_pretrained(tmp_path / "reid").eval()
    assert list(loaded.config.widths) == [8, 16, 32]
    assert loaded.config.num_identities == 6
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), model.embed(x))


# ----------------------------------------------------------------------------- losses


def test_identity_loss_is_the_label_smoothed_cross_entropy():
    """reid_loss's identity term (torch's ``label_smoothing``) against the smoothed targets
    ``(1 - eps) * onehot + eps / C`` computed by hand."""
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    targets = torch.tensor([0, 2])
    eps = 0.2
    expected = 0.0
    for row, t in zip(logits.tolist(), targets.tolist(), strict=True):
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        q = [(1 - eps) * (i == t) + eps / 3 for i in range(3)]
        expected += -sum(qi * lp for qi, lp in zip(q, log_p, strict=True)) / 2

    class Fixed(torch.nn.Module):
        def forward(self, images):
            return {"logits": logits, "features": torch.eye(2)}

    params = ReIDLossParams(label_smoothing=eps, triplet_weight=0.0)
    batch = {"image": torch.zeros(2, 1, 4, 4), "identity": targets}
    _, logs = reid_loss(Fixed(), batch, params)
    assert logs["id_loss"] == pytest.approx(expected, rel=1e-6)


def _toy_points():
    # identity 0: (0, 0), (1, 0); identity 1: (3, 0), (3, 1)
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.0, 1.0]], requires_grad=True)
    return feats, torch.tensor([0, 0, 1, 1])


def test_triplet_loss_hand_computed():
    feats, labels = _toy_points()
    # hardest positive is always 1; hardest negatives are 3, 2, 2, sqrt(5).
    d_an = torch.tensor([3.0, 2.0, 2.0, math.sqrt(5.0)])
    loss, logs = batch_hard_triplet_loss(feats, labels, margin=1.5)
    expected = F.relu(1.0 - d_an + 1.5).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() == pytest.approx((0.5 * 2 + (2.5 - math.sqrt(5.0))) / 4, rel=1e-6)
    assert logs["frac_active"] == 0.75  # anchor (0, 0): 1 - 3 + 1.5 < 0
    loss.backward()
    assert torch.isfinite(feats.grad).all() and feats.grad.abs().sum() > 0

    soft, _ = batch_hard_triplet_loss(feats, labels, soft=True)
    assert soft.item() == pytest.approx(F.softplus(1.0 - d_an).mean().item(), rel=1e-6)


def test_triplet_loss_zero_when_separated_beyond_margin():
    feats, labels = _toy_points()
    loss, logs = batch_hard_triplet_loss(feats, labels, margin=0.3)
    assert loss.item() == 0.0 and logs["frac_active"] == 0.0
    one_id, _ = batch_hard_triplet_loss(feats, torch.zeros(4, dtype=torch.long), margin=0.3)
    assert one_id.item() == 0.0  # no negatives: no valid anchor


def test_reid_loss_convention_and_params():
    torch.manual_seed(0)
    model = ReIDEncoder(**TINY)
    batch = {"image": torch.rand(6, 1, 16, 16), "identity": torch.tensor([0, 0, 1, 1, 2, 2])}
    params = ReIDLossParams(triplet_weight=0.0)
    loss, logs = reid_loss(model, batch, params=params)
    assert loss.ndim == 0 and loss.item() == pytest.approx(logs["id_loss"], rel=1e-6)
    loss, logs = reid_loss(model, batch)
    assert loss.item() == pytest.approx(logs["id_loss"] + logs["triplet_loss"], rel=1e-5)
    loss.backward()
    assert model.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="identity labels"):
        reid_loss(model, {**batch, "identity": torch.tensor([0, 0, 1, 1, 6, 6])})
    with pytest.raises(ValidationError):
        ReIDLossParams(triplet="hard")
    with pytest.raises(ValidationError):
        ReIDLossParams(unknown=1.0)


# ----------------------------------------------------------------------------- sampler


def _labels():
    # 9 identities with 5 items each, one with only 2 items, shuffled over the dataset
    labels = np.repeat(np.arange(10), [5] * 9 + [2])
    return np.random.default_rng(0).permutation(labels)


def test_pk_sampler_batches_hold_p_identities_times_k():
    labels = _labels()
    sampler = PKBatchSampler(labels, p=3, k=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    for batch in batches:
        ids, counts = np.unique(labels[batch], return_counts=True)
        assert len(ids) == 3 and (counts == 4).all()
        for i in ids:  # distinct items when the identity has at least k of them
            items = [b for b in batch if labels[b] == i]
            assert len(set(items)) == min(4, (labels == i).sum())


def test_pk_sampler_small_identity_uses_all_items_with_replacement():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    sampler = PKBatchSampler(labels, p=3, k=4, seed=0)
    (batch,) = list(sampler)
    assert [b for b in batch if labels[b] == 2] == [8, 8, 8, 8]


def test_pk_sampler_is_deterministic_and_resumable():
    labels = _labels()
    a, b = PKBatchSampler(labels, 3, 4, seed=5), PKBatchSampler(labels, 3, 4, seed=5)
    assert list(a) == list(b)
    assert list(a) != list(PKBatchSampler(labels, 3, 4, seed=6))
    a.set_epoch(0)
    epoch0 = list(a)
    assert list(a) != epoch0  # the finished epoch advanced the sampler
    b.set_epoch(0, start_batch=1)
    assert list(b) == epoch0[1:]
    infinite = PKBatchSampler(labels, 3, 4, seed=5, infinite=True)
    first_two = list(itertools.islice(infinite, 6))
    assert first_two[:3] == epoch0 and first_two[3:] == a.epoch_batches(1)


def test_pk_sampler_rank_shards_are_disjoint():
    labels = _labels()
    shards = [PKBatchSampler(labels, p=2, k=2, seed=3, rank=r, world_size=2) for r in range(2)]
    per_rank = [list(s) for s in shards]
    assert len(per_rank[0]) == len(per_rank[1]) == 2  # 5 global batches truncated to 4
    ids = [{int(i) for batch in batches for i in labels[batch]} for batches in per_rank]
    assert not ids[0] & ids[1]
    with pytest.raises(ValueError, match="cannot fill"):
        PKBatchSampler(labels, p=6, k=2, world_size=2)


# ----------------------------------------------------------------------------- metrics


def test_expected_random_ap_matches_enumeration():
    for m, n in [(1, 1), (1, 5), (2, 4), (3, 7), (7, 7)]:
        aps = []
        for pos in itertools.combinations(range(1, n + 1), m):
            aps.append(np.mean([(j + 1) / r for j, r in enumerate(pos)]))
        assert expected_random_ap(np.array([m]), np.array([n]))[0] == pytest.approx(np.mean(aps))


def test_metrics_hand_built_case():
    angles = np.deg2rad([0, 10, 20, 30, 40])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # ranked gallery for the query: id 1, id 0, id 1, id 0 -> AP = (1/2 + 2/4) / 2
    res = rank1_and_map(emb[:1], np.array([0]), emb[1:], np.array([1, 0, 1, 0]))
    assert res["rank1"] == 0.0
    assert res["mAP"] == pytest.approx(0.5)
    assert res["chance_rank1"] == pytest.approx(0.5)
    assert res["chance_mAP"] == pytest.approx(49 / 72)  # enumerated over the 6 placements


def test_metrics_perfect_embeddings_with_self_exclusion():
    ids = np.repeat(np.arange(4), 3)
    emb = np.eye(4)[ids] + 0.01 * np.random.default_rng(0).standard_normal((12, 4))
    res = rank1_and_map(emb, ids, emb, ids, exclude_same_index=True, chunk=5)
    assert res["rank1"] == 1.0 and res["mAP"] == pytest.approx(1.0)
    assert res["chance_rank1"] == pytest.approx(2 / 11)
    assert res["n_queries"] == 12
    with pytest.raises(ValueError, match="query = gallery"):
        rank1_and_map(emb[:3], ids[:3], emb, ids, exclude_same_index=True)


def test_metrics_random_embeddings_are_near_chance():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(20), 30)
    emb = rng.standard_normal((600, 16))
    res = rank1_and_map(emb, ids, emb, ids, exclude_same_index=True)
    assert abs(res["rank1"] - res["chance_rank1"]) < 0.03
    assert abs(res["mAP"] - res["chance_mAP"]) < 0.02


# ----------------------------------------------------------------------------- dataset


def test_frame_dataset_items_and_augmentation():
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    plain = FrameIdentityDataset(frames, np.array([4, 4, 7]))
    item = plain[2]
    assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
    assert item["identity"].dtype == torch.long and item["identity"].item() == 7
    torch.testing.assert_close(item["image"][0], torch.from_numpy(frames[2]).float() / 255)
    torch.manual_seed(0)
    aug = FrameIdentityDataset(frames, np.array([4, 4, 7]), augment=True)[2]["image"]
    assert aug.shape == (1, 16, 16) and aug.min() >= 0.0 and aug.max() <= 1.0
    assert not torch.equal(aug, item["image"])
    with pytest.raises(ValueError, match="uint8"):
        FrameIdentityDataset(frames.astype(np.float32), np.zeros(3))


# ----------------------------------------------------------------------------- training


def _textures(rng, n_ids, size=32):
    """Smooth periodic random textures in [0, 1], each with its own gain."""
    f = np.fft.fftfreq(size)
    lowpass = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.12**2))
    out = []
    for _ in range(n_ids):
        tex = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * lowpass))
        out.append(rng.uniform(0.5, 1.0) * (tex - tex.min()) / (tex.max() - tex.min()))
    return out


def _frames(rng, textures, n_frames):
    """Shifted, gain-jittered, noisy frames of each texture ("video")."""
    frames, ids = [], []
    for i, tex in enumerate(textures):
        for _ in range(n_frames):
            img = np.roll(tex, rng.integers(-4, 5, 2), (0, 1)) * rng.uniform(0.8, 1.2)
            img = img + 0.08 * rng.standard_normal(tex.shape)
            frames.append(np.clip(img * 255, 0, 255).astype(np.uint8))
            ids.append(i)
    return np.stack(frames), np.array(ids)


def _retrieval(model, frames, ids):
    model.eval()
    with torch.no_grad():
        emb = model.embed(torch.from_numpy(frames).float()[:, None] / 255).numpy()
    model.train()
    return rank1_and_map(emb, ids, emb, ids, exclude_same_index=True)


def test_short_training_beats_chance_on_held_out_frames():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    textures = _textures(rng, 6)
    train_frames, train_ids = _frames(rng, textures, 10)
    test_frames, test_ids = _frames(rng, textures, 10)
    model = ReIDEncoder(**TINY)
    before = _retrieval(model, test_frames, test_ids)
    dataset = FrameIdentityDataset(train_frames, train_ids, augment=True)
    loader = DataLoader(dataset, batch_sampler=PKBatchSampler(train_ids, 3, 4, infinite=True))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for batch in itertools.islice(loader, 80):
        loss, _ = reid_loss(model, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = _retrieval(model, test_frames, test_ids)
    assert after["rank1"] > after["chance_rank1"] + 0.4
    assert after["rank1"] > before["rank1"] + 0.2
    assert after["mAP"] > before["mAP"] + 0.2
