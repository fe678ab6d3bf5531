"""Data-parallel training over MPI ranks: :class:`DistributedDataParallel` (PyTorch's name).

Each rank holds a full replica of the model and a shard of every global batch. The wrapper
checks that all replicas have the same parameters, copies rank 0's weights to every rank, and
after each local backward averages the gradients over ranks in a few large messages (buckets of
about ``bucket_cap_mb`` MiB, each packed into one flat buffer; on the MPI host path a large NumPy
gradient that nothing else references is reduced in place instead, without the copy). On CuPy with
NCCL the buckets are reduced on the GPU; otherwise through host memory with MPI.

Under ``mpiexec -n 4 python train.py`` every process first calls ``dist.init()``
(``MPI.COMM_WORLD``); without that call, or without mpi4py, the world has size 1 and the same
code runs in one process, as here:

>>> import numpy as np
>>> from nnx import distributed as dist
>>> from nnx.parallel import DistributedDataParallel
>>> model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2))
>>> loss_fn, opt = nnx.CrossEntropyLoss(), nnx.optim.SGD(model.parameters(), lr=0.1)
>>> xb, yb = nnx.asarray(np.ones((8, 4))), nnx.asarray(np.arange(8) % 2)   # this rank's shard of a batch
>>> ddp = DistributedDataParallel(model)
>>> loss = loss_fn(ddp(xb), yb); _ = ddp.backward(loss_fn.backward())   # gradients averaged over ranks
>>> opt.step()
>>> dist.get_world_size()
1
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import nnx_backends as backends

from . import distributed as dist
from .module import Module

__all__ = ["DistributedDataParallel", "ModelMismatchError"]


class ModelMismatchError(RuntimeError):
    """Raised on every rank when the ranks' models differ in parameter names, shapes or dtypes."""


def _signature(module: Module) -> list[tuple[str, tuple[int, ...], str]]:
    sig = []
    for name, p in module.named_parameters():
        sig.append((name, tuple(p.shape), backends.Backend.dtype_name(p.dtype)))
    return sig


def _first_difference(a: list, b: list) -> str:
    names_a, names_b = [s[0] for s in a], [s[0] for s in b]
    if names_a != names_b:
        missing = sorted(set(names_a) - set(names_b))
        extra = sorted(set(names_b) - set(names_a))
        return f"parameter names differ (missing {missing}, extra {extra})"
    for sa, sb in zip(a, b, strict=True):
        if sa != sb:
            return f"parameter {sa[0]!r}: shape/dtype {sa[1:]} on rank 0 but {sb[1:]}"
    return "no difference"


def check_same_model(module: Module, where: str = "DistributedDataParallel") -> None:
    """Raise :class:`ModelMismatchError` on every rank unless all ranks' signatures agree."""
    sigs = dist.all_gather_object(_signature(module))
    bad = [(r, _first_difference(sigs[0], s)) for r, s in enumerate(sigs) if s != sigs[0]]
    if bad:
        detail = "; ".join(f"rank {r}: {d}" for r, d in bad)
        raise ModelMismatchError(f"{where}: the model differs across ranks (compared to rank 0): {detail}")


class _NcclReducer:
    """Sum-all-reduce of CuPy buffers with NCCL (one communicator per DDP, id sent over MPI)."""

    def __init__(self, nccl: Any, backend: Any) -> None:
        self._backend = backend
        uid = nccl.get_unique_id() if dist.get_rank() == 0 else None
        uid = dist.broadcast_object(uid, 0)
        self._nccl = nccl
        self.comm = nccl.NcclCommunicator(dist.get_world_size(), uid, dist.get_rank())

    def __call__(self, flat: Any) -> Any:
        nccl = self._nccl
        dtype = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
                 "float16": nccl.NCCL_FLOAT16}[backends.Backend.dtype_name(flat.dtype)]
        stream = getattr(self._backend, "current_stream_ptr", lambda: 0)()
        self.comm.allReduce(flat.data.ptr, flat.data.ptr, flat.size, dtype, nccl.NCCL_SUM, stream)
        return flat


def _host_reduce(flat: Any) -> Any:
    """Sum ``flat`` (a temporary the caller owns) over ranks through host memory. Where the
    adapter's host view shares ``flat``'s memory (NumPy, torch CPU) it is reduced in place."""
    b = backends.backend_of(flat)
    host = b.to_numpy(flat)
    if not (host.flags.writeable and host.flags.c_contiguous):
        host = host.copy()
    dist.all_reduce_host(host, "sum")
    return b.asarray(host)


def _make_reducer(model: Module) -> Any:
    params = list(model.parameters())
    if dist.get_world_size() == 1 or not params or params[0].backend.name != "cupy":
        return _host_reduce
    b = params[0].backend
    nccl = getattr(b, "nccl_module", lambda: None)()
    if nccl is None:
        warnings.warn("DistributedDataParallel: cupy.cuda.nccl is not available; gradients are reduced "
                      "with MPI through host memory (slower)", RuntimeWarning, stacklevel=3)
        return _host_reduce
    return _NcclReducer(nccl, b)


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over the ranks of :mod:`nnx.distributed`.

    Args:
        module: the replica on this rank (same architecture on every rank).
        bucket_cap_mb: maximum size of one gradient message, in MiB.
        broadcast_buffers: also copy rank 0's buffers (BatchNorm running stats) at construction.
        reducer: advanced/testing: a callable ``flat_sum(flat_array) -> flat_array`` replacing the
            all-reduce (e.g. a mocked NCCL communicator).

    ``ddp(x)`` runs ``module(x)``; ``ddp.backward(dy)`` runs the local backward then averages the
    gradients over ranks (bit-identical on every rank). Inside ``with ddp.no_sync():`` backward
    only accumulates locally (gradient accumulation); the next synced backward averages the sum.
    ``state_dict`` keys carry the ``module.`` prefix as in PyTorch.
    """

    def __init__(self, module: Module, bucket_cap_mb: float = 25, broadcast_buffers: bool = True, *,
                 reducer: Any = None) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected an nnx.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb!r}")
        self.module = module
        self.bucket_cap_mb = float(bucket_cap_mb)
        self.broadcast_buffers = bool(broadcast_buffers)
        self._sync = True
        #: statistics of the last synced backward: messages sent and bytes per rank
        self.last_messages = 0
        self.last_bytes = 0
        check_same_model(module)
        self._broadcast_state()
        self._reduce = reducer if reducer is not None else _make_reducer(module)

    def _broadcast_state(self) -> None:
        if dist.get_world_size() == 1:
            return
        for p in self.module.parameters():
            p.data = dist.broadcast(p.data, 0)
        if self.broadcast_buffers:
            for mod in self.module.modules():
                for name, buf in list(mod._buffers.items()):
                    if buf is not None and hasattr(buf, "shape"):
                        mod._buffers[name] = dist.broadcast(buf, 0)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        """Local backward, then (unless in :meth:`no_sync`) average gradients across ranks.

        The model's backward sees ``grad_output`` unchanged (hooks and custom backward functions
        behave as in one process); the summed gradients are divided by the world size afterwards.
        """
        dx = self.module.backward(grad_output, input_grad=input_grad)
        if self._sync:
            self._average(divide=True)
        return dx

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Skip the gradient all-reduce of the backward passes inside the block."""
        old, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = old

    def _buckets(self) -> list[list[Any]]:
        cap = self.bucket_cap_mb * 1024 * 1024
        buckets: list[list[Any]] = []
        size, dtype = 0.0, None
        for p in self.module.parameters():
            if not p.requires_grad:
                continue
            nbytes = p.size * _itemsize(p.dtype)
            if not buckets or size + nbytes > cap or p.dtype != dtype:
                buckets.append([])
                size, dtype = 0.0, p.dtype
            buckets[-1].append(p)
            size += nbytes
        return buckets

    def sync_gradients(self) -> None:
        """Average ``p.grad`` over ranks now (missing grads count as zeros)."""
        self._average(divide=True)

    def _average(self, divide: bool) -> None:
        """Sum the gradients over ranks (then divide by the world size when ``divide``).

        On the MPI host path a large gradient that this step's backward created and nothing else
        references (see :func:`_owned_host_grad`) is reduced in place as its own message; the
        others are packed into flat buckets (one copy in, views back out)."""
        n = dist.get_world_size()
        self.last_messages = self.last_bytes = 0
        if n == 1 and self._reduce is _host_reduce:
            return
        direct = self._reduce is _host_reduce
        for bucket in self._buckets():
            packed = []
            for p in bucket:
                host = _owned_host_grad(p) if direct and p.size * _itemsize(p.dtype) >= _DIRECT_BYTES else None
                if host is None:
                    packed.append(p)
                    continue
                dist.all_reduce_host(host, "sum")
                self._count(host.size, p.dtype)
                if divide:
                    p.grad /= n
            if packed:
                self._reduce_packed(packed, n, divide)

    def _count(self, size: int, dtype: Any) -> None:
        self.last_messages += 1
        self.last_bytes += size * _itemsize(dtype)

    def _reduce_packed(self, bucket: list[Any], n: int, divide: bool) -> None:
        xp = bucket[0].backend.xp
        flat = xp.concat([xp.reshape(p.grad if p.grad is not None else xp.zeros_like(p.data), (-1,))
                          for p in bucket])
        flat = self._reduce(flat)
        self._count(flat.shape[0], flat.dtype)
        if divide:
            if bucket[0].backend.mutable:
                flat /= n
            else:
                flat = flat / n
        start = 0
        for p in bucket:
            k = p.size
            p.grad = xp.reshape(flat[start:start + k], p.shape)
            start += k

    def extra_repr(self) -> str:
        return f"world_size={dist.get_world_size()}, bucket_cap_mb={self.bucket_cap_mb}"


#: gradients of at least this many bytes skip the bucket copy when :func:`_owned_host_grad` allows it
_DIRECT_BYTES = 256 * 1024


#: the ownership check counts references, which only CPython's reference counting makes exact
_CPYTHON = sys.implementation.name == "cpython"


def _grad_refs(p: Any) -> int:
    g = p.grad
    return sys.getrefcount(g)


class _Probe:
    __slots__ = ("grad",)


def _exclusive_refs() -> int:
    """What :func:`_grad_refs` counts for a gradient referenced only by its parameter (measured
    once, so that the check follows the interpreter's reference-counting details)."""
    probe = _Probe()
    probe.grad = bytearray(1)
    return _grad_refs(probe)


_EXCLUSIVE_REFS = _exclusive_refs() if _CPYTHON else 0


def _owned_host_grad(p: Any) -> Any:
    """``p.grad`` itself when it may be all-reduced in place: a host (NumPy) array that owns its
    memory, is writable and C-contiguous, and that nothing but ``p`` references (no other
    parameter, no view of it, no caller's variable). Otherwise None (the gradient is packed)."""
    if not _CPYTHON or p.grad is None or _grad_refs(p) > _EXCLUSIVE_REFS:   # counted before this function holds it
        return None
    g = p.grad
    host = backends.backend_of(g).to_numpy(g)
    flags = getattr(host, "flags", None)
    if host is not g or flags is None or not (flags.owndata and flags.writeable and flags.c_contiguous):
        return None
    return host


_ITEMSIZES: dict[int, tuple[Any, int]] = {}


def _itemsize(dtype: Any) -> int:
    # dtype_name is slow next to a dict look-up, and this runs per parameter per step; keyed by
    # identity (dtype objects are long-lived singletons) so that no cross-library == is evaluated
    hit = _ITEMSIZES.get(id(dtype))
    if hit is not None and hit[0] is dtype:
        return hit[1]
    size = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}.get(backends.Backend.dtype_name(dtype), 4)
    _ITEMSIZES[id(dtype)] = (dtype, size)
    return size
