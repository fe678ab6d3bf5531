"""Datasets and mini-batch loading: ``DataLoader``, ``TensorDataset``, ``Subset``, ``random_split``,
``train_test_split`` and the built-in small real data set :func:`load_digits`.

Batches are put on a backend **at batch time**: for host (NumPy) data the rows of a batch are
gathered on the host (one ``np.take``; float64 data is then cast to float32, so store float32 data
to save that pass) and copied to the device once (one transfer per array and batch). Floating
data becomes the default float dtype (float32); integer data (class labels, token ids) stays
integer. Data already on the target backend is gathered there and never leaves the device.

Shuffling is reproducible and restartable: the order of epoch ``k`` is a pure function of the
loader's seed and ``k`` (``DataLoader.set_epoch``), so a run resumed from a checkpoint sees the
same batches as an uninterrupted one. The seed comes from ``seed=`` (or ``generator=``), else
from the latest ``nnx.manual_seed``.

>>> import numpy as np
>>> X, y = np.random.default_rng(0).random((100, 8), dtype=np.float32), np.arange(100) % 3
>>> (Xtr, Xte, ytr, yte) = nnx.data.train_test_split(X, y, test_size=0.2, seed=0)
>>> loader = nnx.data.DataLoader(nnx.data.TensorDataset(Xtr, ytr), batch_size=64, shuffle=True, seed=0)
>>> [(tuple(xb.shape), str(yb.dtype)) for xb, yb in loader]     # a full and a partial batch, on the device
[((64, 8), 'int64'), ((16, 8), 'int64')]
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import nnx_backends as backends
from nnx_backends import host_io

from . import data_workers
from .backend import get_backend, get_default_dtype, to_numpy
from .data_workers import WorkerInfo, get_worker_info
from .errors import is_floating
from .sampler import DistributedSampler

__all__ = [
    "DataLoader",
    "Dataset",
    "DistributedSampler",
    "Subset",
    "TensorDataset",
    "WorkerInfo",
    "get_worker_info",
    "load_digits",
    "random_split",
    "train_test_split",
]


class Dataset:
    """Base class of map-style datasets: ``__len__`` and ``__getitem__(i) -> sample``.

    Any object with these two methods works with :class:`DataLoader`; a sample is an array, a
    number, or a tuple of them (``(features, label)``).
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError


def _is_float(x: Any) -> bool:
    return is_floating(x)


class TensorDataset(Dataset):
    """Samples are the rows of equally long arrays: ``dataset[i] == (a[i], b[i], ...)``.

    The arrays may be host (NumPy) arrays or arrays of any backend; :class:`DataLoader` gathers
    whole batches from them at once (no per-sample Python loop).

    >>> import numpy as np
    >>> ds = nnx.data.TensorDataset(np.zeros((5, 2)), np.arange(5))   # X: (N, ...), y: (N,)
    >>> len(ds), int(ds[3][1])
    (5, 3)
    """

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset: expected at least one array")
        for i, t in enumerate(tensors):
            if not hasattr(t, "shape") or len(t.shape) == 0:
                raise TypeError(f"TensorDataset: argument {i} must be an array with a first (sample) dimension, "
                                f"got {type(t).__name__}")
        n = tensors[0].shape[0]
        bad = [tuple(t.shape) for t in tensors if t.shape[0] != n]
        if bad:
            raise ValueError(f"TensorDataset: all arrays need the same first dimension; shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return tuple(t[index] for t in self.tensors)

    def _gather(self, index: Any, backend: backends.Backend, float_dtype: str) -> tuple[Any, ...]:
        """One batch of rows ``index`` (host int64 array) on ``backend``."""
        return tuple(_gather_rows(t, index, backend, float_dtype) for t in self.tensors)

    def _gather_host(self, index: Any, float_dtype: str) -> tuple[Any, ...] | None:
        """One batch of rows ``index`` as host arrays (in a worker process); None unless all arrays are host."""
        if not all(host_io.is_host_array(t) for t in self.tensors):
            return None
        return tuple(host_io.take_rows(t, index, float_dtype if _is_float(t) else None) for t in self.tensors)


def _gather_rows(t: Any, index: Any, b: backends.Backend, float_dtype: str) -> Any:
    if host_io.is_host_array(t):
        want = float_dtype if _is_float(t) else None
        return b.asarray(host_io.take_rows(t, index, want))  # gathered (and cast) on the host, one transfer
    tb = backends.backend_of(t)
    rows = tb.xp.take(t, tb.asarray(index), axis=0)
    if _is_float(rows) and backends.Backend.dtype_name(rows.dtype) != float_dtype:
        rows = tb.xp.astype(rows, tb.dtype(float_dtype))
    if tb is b:
        return rows
    return b.asarray(to_numpy(rows))


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (a view: nothing is copied)."""

    def __init__(self, dataset: Any, indices: Sequence[int] | Any) -> None:
        self.dataset = dataset
        self.indices = host_io.to_host(indices if not hasattr(indices, "shape") else to_numpy(indices),
                                       dtype="int64").reshape(-1)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def _gather(self, index: Any, backend: backends.Backend, float_dtype: str) -> tuple[Any, ...]:
        inner = self.indices[index]
        gather = getattr(self.dataset, "_gather", None)
        if gather is None:
            return _collate([self.dataset[int(i)] for i in inner], backend, float_dtype)
        return gather(inner, backend, float_dtype)

    def _gather_host(self, index: Any, float_dtype: str) -> tuple[Any, ...] | None:
        gather = getattr(self.dataset, "_gather_host", None)
        return None if gather is None else gather(self.indices[index], float_dtype)


def _resolve_seed(seed: int | None, generator: Any, where: str) -> int:
    if seed is not None and generator is not None:
        raise ValueError(f"{where}: pass seed= or generator=, not both")
    if generator is not None:
        if isinstance(generator, int) and not isinstance(generator, bool):
            return generator
        for attr in ("initial_seed", "seed"):
            val = getattr(generator, attr, None)
            if callable(val) and attr == "initial_seed":
                return int(val())
        raise TypeError(f"{where}: generator must be an int seed or have initial_seed() (a torch.Generator), "
                        f"got {type(generator).__name__}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{where}: seed must be an int, got {type(seed).__name__}")
        return seed
    global_seed = backends.initial_seed()
    if global_seed is not None:
        return global_seed
    return int.from_bytes(os.urandom(8), "little")  # not reproducible: nothing was seeded


def _collate(samples: list[Any], b: backends.Backend, float_dtype: str) -> Any:
    """Stack a list of samples (arrays, numbers or tuples of them) into one batch on ``b``."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(_collate([s[i] for s in samples], b, float_dtype) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _collate([s[k] for s in samples], b, float_dtype) for k in first}
    if hasattr(first, "shape") and not host_io.is_host_array(first):
        sb = backends.backend_of(first)
        stacked = sb.xp.stack(samples)
        if _is_float(stacked) and backends.Backend.dtype_name(stacked.dtype) != float_dtype:
            stacked = sb.xp.astype(stacked, sb.dtype(float_dtype))
        return stacked if sb is b else b.asarray(to_numpy(stacked))
    host = host_io.stack(samples)
    if _is_float(host):
        host = host.astype(float_dtype, copy=False)
    return b.asarray(host)


def _tensors_of(dataset: Any) -> tuple[Any, ...]:
    """The arrays of a TensorDataset (through Subsets); () for any other dataset."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset.tensors if isinstance(dataset, TensorDataset) else ()


def _place_host(batch: Any, b: backends.Backend) -> Any:
    """A worker's host batch (arrays in tuples/dicts, floats already cast) on backend ``b``."""
    if isinstance(batch, tuple):
        return tuple(_place_host(v, b) for v in batch)
    if isinstance(batch, dict):
        return {k: _place_host(v, b) for k, v in batch.items()}
    return b.asarray(batch)


class DataLoader:
    """Iterate over a dataset in mini-batches placed on a backend (``torch.utils.data.DataLoader``).

    Args:
        dataset: a :class:`TensorDataset`, a tuple ``(X, y, ...)`` of equally long arrays (wrapped
            in a TensorDataset), a single array, or any object with ``__len__``/``__getitem__``
            (a list is a list of samples, as in PyTorch).
        batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: a new seeded order every epoch; the order of epoch ``k`` depends only on the
            seed and ``k``.
        drop_last: drop the last incomplete batch.
        seed / generator: the shuffling seed (an int, or an object with ``initial_seed()`` such
            as a ``torch.Generator``). Default: the seed of the latest ``nnx.manual_seed``.
        backend, device: where batches go; default the current backend at iteration time.
        dtype: floating dtype of the batches (default ``nnx.get_default_dtype()``: float32).
        collate_fn: ``collate_fn(list_of_samples) -> batch`` for custom datasets (bypasses the
            automatic placement).
        sampler: an iterable of indices with ``__len__`` (e.g. :class:`DistributedSampler`) that
            replaces the loader's own order; its ``set_epoch`` is called with the loader's epoch.

        num_workers: worker processes that index the dataset (0: load in the main process). The
            order of batches is exactly that of ``num_workers=0``; workers receive index arrays
            and send back host (NumPy) arrays, placed on the backend in the main process (see
            ``docs/data_workers.md``).
        worker_init_fn: called as ``worker_init_fn(worker_id)`` once in each worker, after seeding.
        prefetch_factor: batches in flight per worker (default 2; only with ``num_workers > 0``).
        persistent_workers: keep the worker processes alive from one epoch to the next.
        timeout: seconds to wait for a batch before raising a RuntimeError (0: wait forever,
            but a worker that dies is reported within a fraction of a second).
        multiprocessing_context: a start method (``"fork"``, ``"spawn"``, ``"forkserver"``) or a
            ``multiprocessing`` context; default the platform's. Non-fork methods pickle the
            dataset and ``worker_init_fn`` to start each worker.

    In a worker, :func:`get_worker_info` gives the worker's id, seed and dataset copy; Python's
    ``random`` and NumPy's global RNG are seeded with ``base_seed + id``, ``base_seed`` a pure
    function of the loader's seed and the epoch. With workers, a ``collate_fn`` runs in the main
    process on the samples the workers send back (unlike PyTorch, so that no worker creates
    device arrays).

    Batches are tuples (``(x, y)``) for tuple samples, a single array for array samples.
    Not in PyTorch: ``seed``, ``backend``, ``device``, ``dtype``.

    >>> import numpy as np
    >>> loader = nnx.data.DataLoader((np.ones((70, 4)), np.arange(70)), batch_size=32, shuffle=True, seed=0)
    >>> len(loader), [int(yb.shape[0]) for _, yb in loader]
    (3, [32, 32, 6])
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False, *,
                 seed: int | None = None, generator: Any = None, backend: str | backends.Backend | None = None,
                 device: Any = None, dtype: str | None = None,
                 collate_fn: Callable[[list[Any]], Any] | None = None, sampler: Any = None, num_workers: int = 0,
                 worker_init_fn: Callable[[int], Any] | None = None, prefetch_factor: int | None = None,
                 persistent_workers: bool = False, timeout: float = 0, multiprocessing_context: Any = None) -> None:
        if isinstance(dataset, tuple) and dataset and all(hasattr(t, "shape") for t in dataset):
            dataset = TensorDataset(*dataset)
            self._single = False
        elif hasattr(dataset, "shape") and hasattr(dataset, "dtype"):
            dataset = TensorDataset(dataset)
            self._single = True
        else:
            self._single = False
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__ (or be arrays), "
                            f"got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if dtype is not None and dtype not in ("float16", "float32", "float64"):
            raise ValueError(f"DataLoader: dtype must be 'float16', 'float32' or 'float64', got {dtype!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = _resolve_seed(seed, generator, "DataLoader")
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.collate_fn = collate_fn
        if sampler is not None and self.shuffle:
            raise ValueError("DataLoader: sampler is mutually exclusive with shuffle=True (the sampler orders)")
        #: optional sampler (e.g. DistributedSampler) giving the indices; its set_epoch follows the loader's
        self.sampler = sampler
        #: the epoch whose order the next iteration uses (advanced by one at each iteration)
        self.epoch = 0
        self.prefetch_factor = data_workers.check_worker_args(num_workers, prefetch_factor, persistent_workers,
                                                              timeout, worker_init_fn, multiprocessing_context)
        if num_workers and any(not host_io.is_host_array(t) for t in _tensors_of(dataset)):
            raise ValueError("DataLoader: num_workers > 0 needs host (NumPy) data in a TensorDataset; these arrays "
                             "are already on a backend, where a batch is one gather: use num_workers=0")
        self.num_workers, self.worker_init_fn = num_workers, worker_init_fn
        self.persistent_workers, self.timeout = bool(persistent_workers), timeout
        self.multiprocessing_context = multiprocessing_context
        self._pool: data_workers.WorkerPool | None = None
        self._generation = 0

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use the order of ``epoch`` (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """The iteration state (seed and next epoch); JSON-able, stored in training checkpoints."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        seed, epoch = state.get("seed"), state.get("epoch")
        if not isinstance(seed, int) or not isinstance(epoch, int):
            raise ValueError(f"DataLoader.load_state_dict: expected int 'seed' and 'epoch', got {state!r}")
        self.seed, self.epoch = seed, epoch

    def indices(self, epoch: int | None = None) -> Any:
        """The host array of sample indices of ``epoch`` (default: the next one), in order."""
        n = len(self.dataset)
        e = self.epoch if epoch is None else epoch
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(e)
            return host_io.to_host(list(self.sampler), dtype="int64")
        if self.shuffle:
            return host_io.permutation(self.seed, e, n)
        return host_io.to_host(range(n), dtype="int64")

    def _target(self) -> backends.Backend:
        if self.backend is None and self.device is None:
            return get_backend()
        return backends.get(self.backend if self.backend is not None else get_backend().name, self.device)

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers > 0:
            return self._worker_iter()
        return self._main_iter()

    def _next_epoch_batches(self) -> list[Any]:
        """The index batches of the current epoch, which then advances by one."""
        order = self.indices()
        self.epoch += 1
        n = order.shape[0]
        stop = n - n % self.batch_size if self.drop_last else n
        return [order[s:s + self.batch_size] for s in range(0, stop, self.batch_size)]

    def _worker_iter(self) -> data_workers.WorkerIterator:
        seed = data_workers.base_seed(self.seed, self.epoch)
        batches = self._next_epoch_batches()
        self._generation += 1
        b, float_dtype = self._target(), self.dtype or get_default_dtype()
        pool = self._pool
        if pool is None or pool.closed:
            ctx = data_workers.resolve_context(self.multiprocessing_context)
            pool = data_workers.WorkerPool(self.dataset, self.num_workers, ctx, self.worker_init_fn, seed,
                                           self._generation)
            self._pool = pool if self.persistent_workers else None
        raw = self.collate_fn is not None

        def place(batch: Any) -> Any:
            if raw:
                return self.collate_fn(batch)
            out = _place_host(batch, b)
            return out[0] if self._single else out

        return data_workers.WorkerIterator(pool, batches, self._generation, seed, float_dtype, raw, place,
                                           self.prefetch_factor, self.timeout, self.persistent_workers)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = None  # worker processes belong to this process
        return state

    def _main_iter(self) -> Iterator[Any]:
        batches = self._next_epoch_batches()
        b = self._target()
        float_dtype = self.dtype or get_default_dtype()
        gather = getattr(self.dataset, "_gather", None)
        for idx in batches:
            if self.collate_fn is not None:
                yield self.collate_fn([self.dataset[int(i)] for i in idx])
                continue
            if gather is not None:
                batch = gather(idx, b, float_dtype)
            else:
                batch = _collate([self.dataset[int(i)] for i in idx], b, float_dtype)
            yield batch[0] if self._single else batch

    def __repr__(self) -> str:
        return (f"DataLoader(n={len(self.dataset)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}"
                + (f", num_workers={self.num_workers})" if self.num_workers else ")"))


def random_split(dataset: Any, lengths: Sequence[int | float], seed: int | None = None,
                 generator: Any = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping :class:`Subset` s of the given lengths (seeded).

    ``lengths`` are counts summing to ``len(dataset)``, or fractions summing to 1 (the remainder
    of flooring is spread one by one over the first subsets, as PyTorch does).

    >>> import numpy as np
    >>> train, val = nnx.data.random_split((np.zeros((10, 2)), np.arange(10)), [0.8, 0.2], seed=0)
    >>> len(train), len(val)
    (8, 2)
    """
    if isinstance(dataset, tuple) and dataset and all(hasattr(t, "shape") for t in dataset):
        dataset = TensorDataset(*dataset)
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0) and \
            sum(lengths) <= 1.0 + 1e-9:
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in lengths) or sum(lengths) != n:
        raise ValueError(f"random_split: lengths must be non-negative ints summing to {n} (the dataset's length) "
                         f"or fractions summing to 1, got {lengths}")
    order = host_io.permutation(_resolve_seed(seed, generator, "random_split"), 0, n)
    out, start = [], 0
    for k in lengths:
        out.append(Subset(dataset, order[start:start + k]))
        start += k
    return out


def train_test_split(*arrays: Any, test_size: float | int = 0.25, shuffle: bool = True, seed: int | None = None,
                     stratify: Any = None) -> list[Any]:
    """Split arrays into train and test parts: ``a_train, a_test, b_train, b_test, ...`` (scikit-learn's order).

    ``test_size`` is a fraction (rounded up, as scikit-learn) or a count. Host arrays stay on
    the host; backend arrays are split on their backend. ``stratify`` (labels) keeps the class
    proportions in both parts.

    >>> import numpy as np
    >>> X, y = np.zeros((10, 3)), np.array([0] * 5 + [1] * 5)
    >>> Xtr, Xte, ytr, yte = nnx.data.train_test_split(X, y, test_size=0.2, seed=0, stratify=y)
    >>> Xtr.shape, sorted(yte.tolist())
    ((8, 3), [0, 1])
    """
    if not arrays:
        raise ValueError("train_test_split: expected at least one array")
    n = int(arrays[0].shape[0])
    for a in arrays:
        if int(a.shape[0]) != n:
            raise ValueError(f"train_test_split: arrays have different lengths {[int(a.shape[0]) for a in arrays]}")
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"train_test_split: a fractional test_size must be in (0, 1), got {test_size}")
        n_test = math.ceil(test_size * n)
    elif isinstance(test_size, int) and not isinstance(test_size, bool) and 0 < test_size < n:
        n_test = test_size
    else:
        raise ValueError(f"train_test_split: test_size must be a fraction in (0, 1) or a count in [1, {n}), "
                         f"got {test_size!r}")
    strat = None if stratify is None else to_numpy(stratify)
    train_idx, test_idx = host_io.split_indices(n, n_test, _resolve_seed(seed, None, "train_test_split"),
                                                shuffle, strat)
    out = []
    for a in arrays:
        for idx in (train_idx, test_idx):
            if host_io.is_host_array(a):
                out.append(host_io.take_rows(a, idx))
            else:
                b = backends.backend_of(a)
                out.append(b.xp.take(a, b.asarray(idx), axis=0))
    return out


def load_digits(images: bool = False) -> tuple[Any, Any]:
    """scikit-learn's handwritten digits: 1797 grey 8x8 images of the digits 0-9 (no download).

    Returns host (NumPy) arrays ``(X, y)``: ``X`` float32 scaled to [0, 1], shape ``(1797, 64)``
    (or ``(1797, 1, 8, 8)`` NCHW with ``images=True``), ``y`` int64 labels of shape ``(1797,)``.
    Batches move to the device in the :class:`DataLoader`.

    >>> import pytest; _ = pytest.importorskip("sklearn")   # scikit-learn ships the data
    >>> X, y = nnx.data.load_digits()
    >>> X.shape, y[:5].tolist()
    ((1797, 64), [0, 1, 2, 3, 4])

    Needs scikit-learn, which ships the data: ``pip install 'nnx-backprop[examples]'``.
    """
    try:
        datasets = importlib.import_module("sklearn.datasets")
    except ImportError:
        raise ImportError("nnx.data.load_digits needs scikit-learn (it ships the digits data set); install it with "
                          "pip install 'nnx-backprop[examples]' (or pip install scikit-learn)") from None
    bunch = datasets.load_digits()
    X = bunch.data.astype("float32") / 16.0
    if images:
        X = X.reshape(-1, 1, 8, 8)
    y = bunch.target.astype("int64")
    return X, y
