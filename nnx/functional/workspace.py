"""A pool of scratch buffers that kernels borrow from call to call (recurrent and convolution kernels)."""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

Array = Any

__all__ = ["Workspace"]


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
