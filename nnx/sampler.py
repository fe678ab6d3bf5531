"""DistributedSampler: each rank iterates over its own shard of a dataset (PyTorch's semantics)."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from nnx_backends import host_io

from . import distributed as dist

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """Indices of this rank's shard of ``dataset`` (``torch.utils.data.DistributedSampler``).

    Args:
        dataset: anything with ``__len__``.
        num_replicas / rank: default :func:`nnx.distributed.get_world_size` / ``get_rank``.
        shuffle: a seeded permutation that depends only on ``seed`` and the epoch.
        seed: the shuffling seed (must be the same on every rank).
        drop_last: drop the tail so that every rank gets the same number of distinct samples;
            otherwise the index list is padded by repeating its start.

    Shards are disjoint (up to the padding) and their union is the whole data set; rank ``r``
    takes every ``num_replicas``-th index starting at ``r``. Call :meth:`set_epoch` before each
    epoch (a :class:`~nnx.data.DataLoader` given ``sampler=`` does it for you).

    >>> s = DistributedSampler(range(10), num_replicas=3, rank=0, shuffle=False)
    >>> list(s)
    [0, 3, 6, 9]
    """

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        rank = dist.get_rank() if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive int, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank must be an int in [0, {num_replicas - 1}], got {rank!r}")
        if not hasattr(dataset, "__len__"):
            raise TypeError(f"DistributedSampler: dataset must have __len__, got {type(dataset).__name__}")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration (same on every rank)."""
        self.epoch = int(epoch)

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch."""
        n = len(self.dataset)
        order = host_io.permutation(self.seed, self.epoch, n).tolist() if self.shuffle else list(range(n))
        if self.drop_last:
            order = order[:self.total_size]
        else:
            pad = self.total_size - len(order)
            while pad > 0 and order:
                order += order[:pad]
                pad = self.total_size - len(order)
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f"DistributedSampler(n={len(self.dataset)}, num_replicas={self.num_replicas}, rank={self.rank}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")
