"""ReID losses: label-smoothed identity cross-entropy + batch-hard triplet loss (BNNeck
method), and the same/different pair cross-entropy of the Siamese method.

``reid_loss(model, batch)`` follows the project's ``loss_fn`` convention and expects
``batch = {"image": (B, 1, H, W) float in [0, 1], "identity": (B,) long}`` drawn by a
:class:`~echomotion.reid.sampler.PKBatchSampler` (P identities x K frames), so that every
anchor has positives and negatives in its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echomotion.reid.params import ReIDLossParams


def batch_hard_triplet_loss(
    features: Tensor, labels: Tensor, margin: float = 0.3, soft: bool = False
) -> tuple[Tensor, dict[str, float]]:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances.

    For each anchor, the farthest positive (same label, other item) and the closest
    negative are mined. Anchors lacking a positive or a negative are ignored; the loss is
    zero (with a gradient path) when no anchor is valid.

    Returns the loss and logs: ``frac_active`` (anchors with non-zero hinge), ``d_ap``, ``d_an``.
    """
    # Exact pairwise distances: the matmul shortcut loses precision near zero.
    dist = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist")  # (B, B)
    same = labels[:, None] == labels[None, :]  # (B, B)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)  # (B,)
    if not valid.any():
        return features.sum() * 0.0, {"frac_active": 0.0, "d_ap": 0.0, "d_an": 0.0}
    d_ap = dist.masked_fill(~pos_mask, float("-inf")).amax(dim=1)[valid]  # (V,)
    d_an = dist.masked_fill(~neg_mask, float("inf")).amin(dim=1)[valid]  # (V,)
    diff = d_ap - d_an
    per_anchor = F.softplus(diff) if soft else F.relu(diff + margin)
    logs = {
        "frac_active": (diff + (0.0 if soft else margin) > 0).float().mean().item(),
        "d_ap": d_ap.mean().item(),
        "d_an": d_an.mean().item(),
    }
    return per_anchor.mean(), logs


def reid_loss(
    model: nn.Module, batch: dict[str, Tensor], params: ReIDLossParams | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Weighted ID + triplet loss of ``model`` (a ReIDEncoder) on one PK batch.

    Use ``functools.partial(reid_loss, params=...)`` to pass non-default params to a
    generic training loop. Logs: loss, id_loss, triplet_loss, id_accuracy and triplet stats.
    """
    params = params or ReIDLossParams()
    images, identity = batch["image"], batch["identity"].long()
    out = model(images)
    n_classes = out["logits"].shape[1]
    if identity.min() < 0 or identity.max() >= n_classes:
        raise ValueError(
            f"identity labels must lie in [0, {n_classes}), got "
            f"[{identity.min().item()}, {identity.max().item()}]"
        )
    id_loss = F.cross_entropy(out["logits"], identity, label_smoothing=params.label_smoothing)
    tri_loss, tri_logs = batch_hard_triplet_loss(
        out["features"], identity, params.margin, soft=params.triplet == "soft"
    )
    loss = params.id_weight * id_loss + params.triplet_weight * tri_loss
    with torch.no_grad():
        accuracy = (out["logits"].argmax(dim=1) == identity).float().mean().item()
    logs = {
        "loss": loss.item(),
        "id_loss": id_loss.item(),
        "triplet_loss": tri_loss.item(),
        "id_accuracy": accuracy,
        **{f"triplet_{k}": v for k, v in tri_logs.items()},
    }
    return loss, logs


def split_pairs(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """First frames (n, 1, H, W), second frames (n, 1, H, W) and float same-video targets
    (n,) of a batch of ``2 n`` frames drawn by a
    :class:`~echomotion.reid.pairs.PairBatchSampler` (first items, then second items)."""
    images, identity = batch["image"], batch["identity"]
    n, odd = divmod(len(images), 2)
    if odd or n == 0:
        raise ValueError(
            f"a pair batch holds an even, non-zero number of frames, got {len(images)}"
        )
    return images[:n], images[n:], (identity[:n] == identity[n:]).float()


def siamese_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Same/different binary cross-entropy (with logits) of ``model`` (a
    SiameseReIDEncoder) on one pair batch, as the EchoNet-Synthetic privacy network.

    Logs: loss, pair_accuracy (logit sign against the target), positive_fraction, and the
    mean feature cosine of positive and of negative pairs (0 when the batch has none).
    """
    first, second, same = split_pairs(batch)
    out = model(first, second)
    loss = F.binary_cross_entropy_with_logits(out["logits"], same)
    with torch.no_grad():
        accuracy = ((out["logits"] > 0).float() == same).float().mean().item()
        cosine = F.cosine_similarity(out["features"], out["other_features"], dim=1)  # (n,)
    logs = {
        "loss": loss.item(),
        "pair_accuracy": accuracy,
        "positive_fraction": same.mean().item(),
        "cos_positive": ((cosine * same).sum() / same.sum().clamp(min=1)).item(),
        "cos_negative": ((cosine * (1 - same)).sum() / (1 - same).sum().clamp(min=1)).item(),
    }
    return loss, logs
