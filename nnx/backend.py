"""The current backend: which array library and device new arrays and parameters go to.

``set_backend`` changes the process-wide default; ``use_backend`` overrides it inside a ``with``
block for the current thread (and asyncio task) only, so concurrent threads never see each
other's choice. The environment variable ``NNX_BACKEND`` (``"cupy"`` or ``"torch:cuda:0"``) sets
the default at import time.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

import nnx_backends as backends
from nnx_backends import Backend

_default: Backend | None = None
_override: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("nnx_backend", default=None)


def _parse(spec: str) -> tuple[str, str | None]:
    name, _, device = spec.partition(":")
    return name, (device or None)


def get_backend() -> Backend:
    """The backend in effect here (the innermost ``use_backend``, else the default)."""
    b = _override.get()
    if b is not None:
        return b
    global _default
    if _default is None:
        name, device = _parse(os.environ.get("NNX_BACKEND", "numpy"))
        _default = backends.get(name, device)
    return _default


def set_backend(name: str | Backend, device: Any = None) -> Backend:
    """Make ``name`` (on ``device``) the default backend of this process; returns it.

    >>> nnx.set_backend("numpy")
    <nnx backend 'numpy' device=cpu>
    >>> # needs a CUDA GPU with CuPy (BackendUnavailable elsewhere), so not run as a doctest:
    >>> nnx.set_backend("cupy", device=0)   # doctest: +SKIP

    Raises ValueError for an unknown name and ``BackendUnavailable`` with the reason when the
    backend cannot run here (for example CuPy without a GPU).
    """
    global _default
    if isinstance(name, str) and device is None and ":" in name:
        name, device = _parse(name)
    _default = backends.get(name, device)
    return _default


@contextlib.contextmanager
def use_backend(name: str | Backend, device: Any = None) -> Iterator[Backend]:
    """Context manager: use ``name`` as the current backend inside the block (thread-safe)."""
    if isinstance(name, str) and device is None and ":" in name:
        name, device = _parse(name)
    token = _override.set(backends.get(name, device))
    try:
        yield _override.get()
    finally:
        _override.reset(token)


def available_backends() -> dict[str, bool | str]:
    """Every registered backend name mapped to True, or to the reason it cannot run here."""
    return backends.available()


def backend_names() -> list[str]:
    """Names of the registered backends."""
    return backends.names()


_default_dtype = "float32"


def get_default_dtype() -> str:
    """The floating dtype used for new parameters and for floating host data (``"float32"``)."""
    return _default_dtype


def set_default_dtype(dtype: str) -> None:
    """Set the default floating dtype (``"float32"`` or ``"float64"``)."""
    global _default_dtype
    if dtype not in ("float32", "float64", "float16"):
        raise ValueError(f"set_default_dtype: expected 'float32', 'float64' or 'float16', got {dtype!r}")
    _default_dtype = dtype


def asarray(obj: Any, dtype: Any = None, backend: str | Backend | None = None, device: Any = None) -> Any:
    """Put host data (NumPy array, list, scalar) or another backend's array on a backend.

    Floating data becomes the default dtype (float32) unless ``dtype`` says otherwise; integer
    and boolean data (class labels, token ids, masks) keep their kind.

    >>> import numpy as np
    >>> x = nnx.asarray(np.random.rand(4, 3))   # float32 on the current backend
    >>> tuple(x.shape), str(x.dtype), str(nnx.asarray([0, 2]).dtype)
    ((4, 3), 'float32', 'int64')
    """
    b = get_backend() if backend is None and device is None else backends.get(
        backend if backend is not None else get_backend().name, device)
    if dtype is None:
        kind = _kind_of(obj)
        if kind == "float":
            dtype = _default_dtype
    if not isinstance(obj, (list, tuple, int, float, bool)) and not _is_host(obj) and not b.owns(obj):
        obj = to_numpy(obj)
    elif b.owns(obj) and b.device_of(obj) != b.device:
        obj = to_numpy(obj)
    return b.asarray(obj, dtype=dtype)


def _is_host(obj: Any) -> bool:
    module = type(obj).__module__
    return module == "numpy" or (type(obj).__name__ == "ndarray" and module.startswith("numpy"))


def _kind_of(obj: Any) -> str:
    dt = getattr(obj, "dtype", None)
    if dt is None:
        if isinstance(obj, bool):
            return "bool"
        if isinstance(obj, int):
            return "int"
        if isinstance(obj, float):
            return "float"
        if isinstance(obj, (list, tuple)):  # every element counts: [[1, 2], [3, 4.5]] is float data
            kinds = {_kind_of(v) for v in obj}
            for kind in ("float", "other", "int"):
                if kind in kinds:
                    return kind
            return "bool" if kinds else "int"
        return "other"
    name = Backend.dtype_name(dt)
    if name.startswith(("float", "bfloat")):
        return "float"
    if name.startswith(("int", "uint")):
        return "int"
    if name == "bool":
        return "bool"
    return "other"


def to_numpy(x: Any) -> Any:
    """A host (NumPy) copy of ``x`` from any backend; host arrays pass through unchanged.

    ``x`` may be an :class:`nnx.Parameter` (its values are converted).
    """
    from .module import Parameter

    if isinstance(x, Parameter):
        x = x.data
    if _is_host(x):
        return x
    return backends.backend_of(x).to_numpy(x)


def manual_seed(seed: int) -> None:
    """Seed the random generator of every backend, those created later included.

    Runs are reproducible per backend: the same seed gives the same numbers on the same backend
    and device, but NumPy, CuPy and torch use different generators, so their streams differ.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: expected an int, got {type(seed).__name__}")
    backends.seed_all(seed)


def synchronize(backend: Backend | None = None) -> None:
    """Wait for the device of ``backend`` (default: current) to finish its queued work."""
    (backend or get_backend()).synchronize()
