"""Seeded, resumable batch streams: the data order is a pure function of
``(seed, rank, world_size, position)``, where position counts the micro-batches a
rank has drawn, so a resumed run draws exactly the batches an uninterrupted one would.

Every item is fetched as a key ``(index, epoch, item_seed)``: the dataset's
``set_epoch(epoch)`` is called first when it has one and the epoch is known, and the
global ``random``/``numpy``/``torch`` generators are seeded with ``item_seed`` for the
call (and restored after it), so random augmentations are reproducible in any
DataLoader worker and after a resume.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

Key = tuple[int, "int | None", int]  # (dataset index, epoch or None, item seed)
BatchSamplerFactory = Callable[[Dataset, int, int, int, int], Iterable[Sequence[int]]]


class ShardedSampler:
    """The default sampler: this rank's items of successive seeded epoch permutations.

    Epoch ``e`` is ``default_rng([seed, e]).permutation(n)``, wrapped around to a multiple
    of ``world_size``; rank ``r`` takes every ``world_size``-th item from ``r``. The items
    of successive epochs form one endless stream cut into batches, so no item is dropped
    and a batch may span two epochs.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int, world_size: int):
        if n < world_size:
            raise ValueError(f"a dataset of {n} items cannot be shared by {world_size} ranks")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_epoch = -(-n // world_size)  # items of this rank per epoch

    def epoch_items(self, epoch: int) -> np.ndarray:
        """This rank's dataset indices of ``epoch``, in order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return np.resize(order, self.per_epoch * self.world_size)[self.rank :: self.world_size]

    def batches(self, start: int) -> Iterator[list[tuple[int, int | None]]]:
        """Batches of ``(index, epoch)`` from batch number ``start`` on, forever."""
        epoch, offset = divmod(start * self.batch_size, self.per_epoch)
        batch: list[tuple[int, int | None]] = []
        while True:
            for index in self.epoch_items(epoch)[offset:]:
                batch.append((int(index), epoch))
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            epoch, offset = epoch + 1, 0


def custom_batches(sampler: Iterable[Sequence[int]], start: int) -> Iterator[list]:
    """Batches of ``(index, epoch)`` of a user batch sampler from batch ``start`` on.

    A sampler with ``__len__`` (batches per epoch) and ``set_epoch(epoch)`` is iterated
    one epoch at a time, so it may be finite, and its epoch reaches the dataset. Any
    other sampler must be infinite; it is replayed from its beginning to ``start``.
    """
    if not (hasattr(sampler, "__len__") and hasattr(sampler, "set_epoch")):
        for batch in itertools.islice(iter(sampler), start, None):
            yield [(int(i), None) for i in batch]
        raise RuntimeError(f"batch sampler {sampler!r} ended; it must be infinite")
    per_epoch = len(sampler)
    epoch, skip = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        drawn = 0
        for batch in itertools.islice(iter(sampler), skip, per_epoch):
            drawn += 1
            yield [(int(i), epoch) for i in batch]
        if drawn != per_epoch - skip:
            raise RuntimeError(f"{sampler!r} gave {skip + drawn} batches, its len is {per_epoch}")
        epoch, skip = epoch + 1, 0


class BatchStream:
    """Batch sampler for a DataLoader: keys ``(index, epoch, item_seed)`` of each batch.

    Item seeds come from ``SeedSequence([seed, rank, position])`` of the batch.
    """

    def __init__(self, batches: Iterator[list], seed: int, rank: int, start: int):
        self._batches, self.seed, self.rank, self.start = batches, seed, rank, start

    def __iter__(self) -> Iterator[list[Key]]:
        for position, batch in enumerate(self._batches, start=self.start):
            seeds = np.random.SeedSequence([self.seed, self.rank, position]).generate_state(
                len(batch)
            )
            yield [(i, e, int(s)) for (i, e), s in zip(batch, seeds, strict=True)]


@contextlib.contextmanager
def seeded_global_rng(seed: int):
    """Seed ``random``, ``numpy.random`` and torch's CPU generator; restore them after."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class SeededItems(Dataset):
    """Wraps a dataset so that it is indexed by the keys of a :class:`BatchStream`."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key) -> Any:
        index, epoch, seed = key
        if epoch is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        with seeded_global_rng(seed):
            return self.dataset[index]


def batch_iterator(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    rank: int,
    world_size: int,
    start: int,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    batch_sampler_factory: BatchSamplerFactory | None = None,
) -> Iterator[Any]:
    """Endless collated batches of this rank, from micro-batch number ``start`` on.

    ``batch_sampler_factory(dataset, batch_size, seed, rank, world_size)`` replaces the
    default :class:`ShardedSampler`; it must shard by rank itself.
    """
    if batch_sampler_factory is None:
        sampler = ShardedSampler(len(dataset), batch_size, seed, rank, world_size)
        batches = sampler.batches(start)
    else:
        user = batch_sampler_factory(dataset, batch_size, seed, rank, world_size)
        batches = custom_batches(user, start)
    loader = DataLoader(
        SeededItems(dataset),
        batch_sampler=BatchStream(batches, seed, rank, start),
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        # Its own generator, so building the loader leaves the global RNG untouched.
        generator=torch.Generator().manual_seed(seed),
    )
    return iter(loader)
