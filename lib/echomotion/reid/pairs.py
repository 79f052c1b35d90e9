"""Balanced pair batch sampler for the Siamese ReID method (identity = video).

Use as ``DataLoader(dataset, batch_sampler=PairBatchSampler(...))``; like
:class:`~echomotion.reid.sampler.PKBatchSampler` it shards itself across ranks. A batch of
``n`` pairs is a list of ``2 n`` dataset indices: the first frames of the pairs, then the
second frames, so pair ``i`` is ``(batch[i], batch[n + i])`` and its label is whether the
two items share an identity.

One epoch is one pass over a seeded permutation of the identities as anchors (the
EchoNet-Synthetic privacy dataset: one item per video), wrapped around to whole batches
on every rank. The first ``round(n * positive_fraction)`` anchors of a batch get a
positive pair (two distinct frames of their video), the others a negative one (a frame
of theirs and a frame of another video drawn uniformly). Global batch ``j`` goes to rank
``j % world_size``. Randomness depends only on ``(seed, epoch, j)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from echomotion.reid.sampler import IdentityBatchSampler


class PairBatchSampler(IdentityBatchSampler):
    """Yield lists of ``2 * pairs`` dataset indices: first items, then second items.

    Args:
        identities: the identity label of every dataset item (any hashable, sortable values).
        pairs: pairs per batch.
        seed: base seed; batch ``j`` of epoch ``e`` draws from ``default_rng([seed, e, j])``.
        rank, world_size: this process's shard of the batches.
        positive_fraction: share of same-identity pairs in a batch (rounded to a count).
        infinite: keep iterating over successive epochs instead of stopping after one.
    """

    def __init__(
        self,
        identities: Sequence,
        pairs: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        positive_fraction: float = 0.5,
        infinite: bool = False,
    ) -> None:
        if pairs < 1:
            raise ValueError(f"pairs must be >= 1, got {pairs}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction}")
        super().__init__(identities, seed, rank, world_size, infinite)
        if len(self.groups) < 2:
            raise ValueError(f"negative pairs need at least 2 identities, got {len(self.groups)}")
        self.pairs = pairs
        self.n_positive = round(pairs * positive_fraction)
        self.batches_per_rank = -(-len(self.groups) // (pairs * world_size))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of this rank for ``epoch`` (deterministic given seed and epoch)."""
        n_global = self.batches_per_rank * self.world_size
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.groups))
        anchors = np.resize(order, n_global * self.pairs)  # wrapped to whole batches
        batches = []
        for j in range(self.rank, n_global, self.world_size):
            # Each global batch has its own stream, so a rank need not draw the others' items.
            rng = np.random.default_rng([self.seed, epoch, j])
            chosen = anchors[j * self.pairs : (j + 1) * self.pairs]
            drawn = [self._pair(rng, int(g), i < self.n_positive) for i, g in enumerate(chosen)]
            batches.append([a for a, _ in drawn] + [b for _, b in drawn])
        return batches

    def _pair(self, rng: np.random.Generator, group: int, positive: bool) -> tuple[int, int]:
        """Two items of ``group`` (distinct when it has two), or one of ``group`` and one of
        another identity drawn uniformly."""
        items = self.groups[group]
        if positive:
            if len(items) < 2:
                return int(items[0]), int(items[0])
            a, b = rng.choice(items, size=2, replace=False)
            return int(a), int(b)
        other = (group + int(rng.integers(1, len(self.groups)))) % len(self.groups)
        return int(rng.choice(items)), int(rng.choice(self.groups[other]))
