"""P x K batch sampler: P identities (videos) x K instances (frames) per batch.

Use as ``DataLoader(dataset, batch_sampler=PKBatchSampler(...))``. The sampler shards
itself across ranks, so it must not be sharded again (e.g. by accelerate's
``prepare``; pass ``split_batches=False`` and ``dispatch_batches=False`` or build the
loader after ``prepare``).

One epoch is one pass over a seeded permutation of the identities: each identity
appears in at most one batch per epoch, across all ranks. Global batch ``j`` of an epoch
goes to rank ``j % world_size``, so ranks see disjoint identities at every step; the
number of global batches is truncated to a multiple of ``world_size`` so every rank gets
the same number of batches. Randomness depends only on ``(seed, epoch)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class IdentityBatchSampler:
    """What every identity batch sampler shares: the items grouped by identity, this
    rank's shard, and epochs that resume mid-way. A subclass sets ``batches_per_rank`` and
    builds ``epoch_batches(epoch)``.

    Args:
        identities: the identity label of every dataset item (any hashable, sortable values).
        seed: base seed of the epochs' draws.
        rank, world_size: this process's shard of the batches.
        infinite: keep iterating over successive epochs instead of stopping after one.
    """

    batches_per_rank: int

    def __init__(
        self, identities: Sequence, seed: int, rank: int, world_size: int, infinite: bool
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        uniques, inverse = np.unique(np.asarray(identities), return_inverse=True)
        self.groups = [np.flatnonzero(inverse == i) for i in range(len(uniques))]
        self.seed, self.rank, self.world_size, self.infinite = seed, rank, world_size, infinite
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Start the next iteration at ``epoch``, skipping its first ``start_batch`` batches
        of this rank (to resume mid-epoch)."""
        if not 0 <= start_batch < self.batches_per_rank:
            raise ValueError(
                f"start_batch must lie in [0, {self.batches_per_rank}), got {start_batch}"
            )
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        """Batches of this rank per epoch (an infinite sampler repeats epochs)."""
        return self.batches_per_rank

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of this rank for ``epoch`` (deterministic given seed and epoch)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        """Batches from ``(epoch, start_batch)`` on; each finished epoch advances the
        sampler's epoch, so successive finite iterations differ even without set_epoch."""
        while True:
            batches = self.epoch_batches(self.epoch)[self.start_batch :]
            self.start_batch = 0
            yield from batches
            self.epoch += 1
            if not self.infinite:
                return


class PKBatchSampler(IdentityBatchSampler):
    """Yield lists of ``p * k`` dataset indices: ``k`` items of each of ``p`` identities.

    Args:
        identities: the identity label of every dataset item (any hashable, sortable values).
        p: identities per batch.
        k: items per identity; an identity with fewer items is sampled with replacement.
        seed: base seed; epoch ``e`` draws from ``np.random.default_rng([seed, e])``.
        rank, world_size: this process's shard of the batches.
        infinite: keep iterating over successive epochs instead of stopping after one.
    """

    def __init__(
        self,
        identities: Sequence,
        p: int,
        k: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        infinite: bool = False,
    ) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        super().__init__(identities, seed, rank, world_size, infinite)
        self.batches_per_rank = len(self.groups) // p // world_size
        if self.batches_per_rank == 0:
            raise ValueError(
                f"{len(self.groups)} identities cannot fill one batch of p={p} identities "
                f"on each of {world_size} ranks"
            )
        self.p, self.k = p, k

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of this rank for ``epoch`` (deterministic given seed and epoch)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.groups))
        n_global = self.batches_per_rank * self.world_size
        batches = []
        for j in range(self.rank, n_global, self.world_size):
            # Each global batch has its own stream, so a rank need not draw the others' items.
            rng = np.random.default_rng([self.seed, epoch, j])
            chosen = order[j * self.p : (j + 1) * self.p]
            batches.append([int(i) for g in chosen for i in self._draw(rng, g)])
        return batches

    def _draw(self, rng: np.random.Generator, group: int) -> np.ndarray:
        """``k`` items of identity ``group``: distinct when it has enough, otherwise every
        item once plus random repeats."""
        items = self.groups[group]
        if len(items) >= self.k:
            return rng.choice(items, size=self.k, replace=False)
        return np.concatenate([rng.permutation(items), rng.choice(items, self.k - len(items))])
