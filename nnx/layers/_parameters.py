"""Where layers create their parameters and buffers: the requested (or current) backend and dtype."""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

from ..backend import get_backend, get_default_dtype

__all__ = ["backend_for", "full"]


def backend_for(dtype: Any, backend: Any, device: Any) -> tuple[backends.Backend, Any]:
    """The backend (``backend``/``device``, or the current one) and its dtype for ``dtype`` (default float32)."""
    b = get_backend() if backend is None and device is None else backends.get(
        backend if backend is not None else get_backend().name, device)
    return b, b.dtype(dtype if dtype is not None else get_default_dtype())


def full(shape: tuple[int, ...], value: float, dtype: Any, backend: Any, device: Any) -> Any:
    """An array of ``shape`` filled with ``value`` on that backend."""
    b, dt = backend_for(dtype, backend, device)
    return b.xp.full(shape, value, dtype=dt, device=b.device)
