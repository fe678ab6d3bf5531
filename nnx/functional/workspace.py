"""A pool of scratch buffers that kernels borrow from call to call (recurrent and convolution kernels),
and the per-step arrays of the recurrent time loop kept in them."""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

Array = Any

__all__ = ["Steps", "Workspace"]


class Workspace:
    """A pool of scratch arrays that recurrent kernels reuse from call to call.

    A kernel takes its per-call buffers (previous states, cell states, gate gradients) from the
    pool and gives them back when its backward has run (or at once when no backward will run), so
    a training loop stops allocating, and the allocator stops returning and re-faulting, megabytes
    of memory every step. Each recurrent layer owns one; functional calls without one allocate.
    Buffers of at most ``max_shapes`` distinct shapes are kept (the least recently used shape is
    dropped), so variable sequence lengths do not make the pool grow without bound.
    """

    def __init__(self, max_shapes: int = 8) -> None:
        self.max_shapes = max_shapes
        self._free: dict[tuple, list] = {}

    @staticmethod
    def _key(shape: tuple[int, ...], dtype: Any, device: Any, kind: type) -> tuple:
        return (tuple(shape), str(dtype), str(device), kind)

    def take(self, xp: Any, shape: tuple[int, ...], dtype: Any, device: Any, kind: type) -> Array:
        """A buffer of this shape, dtype and device (contents undefined)."""
        key = self._key(shape, dtype, device, kind)
        free = self._free.pop(key, None)
        if free is not None:
            self._free[key] = free  # most recently used last
            if free:
                return free.pop()
        return xp.empty(shape, dtype=dtype, device=device)

    def give(self, *arrays: Array) -> None:
        """Return buffers to the pool."""
        for a in arrays:
            key = self._key(tuple(a.shape), a.dtype, backends.device_of(a), type(a))
            self._free.setdefault(key, []).append(a)
        while len(self._free) > self.max_shapes:
            del self._free[next(iter(self._free))]

    def clear(self) -> None:
        """Drop every pooled buffer (frees the memory)."""
        self._free.clear()


class Steps:
    """Per-step arrays, used one by one then all at once (``(T, ...)``): copied into a buffer of the
    workspace on mutable host-memory libraries (cheap writes, costly fresh memory: the step's own
    array is dropped at once, so the next step's kernel reuses its memory), else a list stacked
    once (GPUs: one launch; immutable libraries: no writes). None entries are kept as they are.
    ``buf``: a ``(T, ...)`` buffer to write into when pooling (possibly a view of a shared one; not
    given back unless ``owned``); else one is taken from the workspace at the first step."""

    __slots__ = ("b", "buf", "items", "owned", "pool")

    def __init__(self, b: Any, ws: Workspace | None, steps: int, buf: Array | None = None,
                 owned: bool = True) -> None:
        self.b = b
        self.pool = ws if ws is not None and b.mutable and b.host_memory else None
        self.items: list = [None] * steps
        self.buf: Array | None = buf if self.pool is not None else None
        self.owned = owned

    def __getitem__(self, t: int) -> Array:
        item = self.items[t]
        return self.buf[t, ...] if item is _POOLED else item

    def __setitem__(self, t: int, a: Array) -> None:
        if self.pool is None or a is None:
            self.items[t] = a
            return
        if self.buf is None:
            self.buf = self.pool.take(self.b.xp, (len(self.items), *a.shape), a.dtype, self.b.device_of(a), type(a))
        self.buf[t, ...] = a
        self.items[t] = _POOLED

    def slot(self, t: int) -> Array | None:
        """Where step ``t``'s array can be written directly (``buf[t]``, which then holds the step), or
        None when this is not pooled or its buffer is not there yet (assign the step instead)."""
        if self.buf is None:
            return None
        self.items[t] = _POOLED
        return self.buf[t, ...]

    def __len__(self) -> int:
        return len(self.items)

    def stacked(self) -> Array:
        """All steps, ``(T, ...)``: the pooled buffer, or one ``stack``."""
        return self.buf if self.buf is not None else self.b.xp.stack(self.items)

    def give_back(self) -> None:
        """Return the pooled buffer (call when what :meth:`stacked` returned is no longer used)."""
        if self.buf is not None and self.owned:
            self.pool.give(self.buf)
        self.items, self.buf = [], None


_POOLED = object()  # marks a step of :class:`Steps` that lives in the pooled buffer
