"""dask adapter: a lazy Array API library (through array-api-compat's ``dask.array`` namespace).

dask builds a task graph and computes it when a value is read (``to_numpy``, ``float(x)``), so it
proves that nnx needs nothing eager beyond the points where it reads values on purpose. Its arrays
carry no ``.device`` attribute: nnx asks :meth:`device_of`, which answers ``"cpu"``. Writes by index
are refused by array-api-compat's namespace, so the adapter declares ``mutable = False`` and nnx
stores every result it computes, as on JAX.

What it cannot do well: a training loop's graph grows with every step until a value is read, so a
step should end with a read (the loss) or ``nnx.synchronize()``; and every host read recomputes
what it depends on unless persisted. It is a proof of portability, not a fast backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Backend


def probe() -> str | None:
    try:
        import array_api_compat.dask.array  # noqa: F401
        import dask.array  # noqa: F401
    except ImportError:
        return "dask is not installed (pip install 'nnx-backprop[dask]')"
    return None


class DaskBackend(Backend):
    name = "dask"
    host_memory = True
    mutable = False

    def __init__(self, device: Any = None) -> None:
        super().__init__()
        import array_api_compat.dask.array as xp
        import dask.array

        if device not in (None, "cpu"):
            from .base import BackendUnavailable

            raise BackendUnavailable(f"backend 'dask': only the 'cpu' device exists, got {device!r}")
        self._da = dask.array
        self.xp = xp
        self.array_type = dask.array.Array
        self.device = "cpu"

    @property
    def device_name(self) -> str:
        return "cpu"

    def device_of(self, x: Any) -> Any:
        return "cpu"

    def asarray(self, obj: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        if isinstance(obj, self.array_type):
            return obj if dtype is None else self.xp.astype(obj, self.dtype(dtype))
        host = np.asarray(obj, dtype=self.dtype(dtype) if dtype is not None else None)
        return self._da.from_array(np.array(host, copy=True), chunks=-1)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.compute() if isinstance(x, self.array_type) else x)

    def synchronize(self) -> None:
        pass
