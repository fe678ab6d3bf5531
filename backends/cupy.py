"""CuPy adapter: CUDA GPUs.

``import cupy`` succeeds on machines without a GPU or driver; the first allocation then raises
``CUDARuntimeError``. :func:`probe` detects that with ``cupy.is_available()`` and turns it into
a sentence, so ``nnx.available_backends()`` can say why CuPy cannot run here.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .base import Backend, BackendUnavailable
from .cupy_fused import CupyFused


def probe() -> str | None:
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'nnx-backprop[cuda12]' or '[cuda13]')"
    except Exception as exc:  # a broken CUDA toolkit can fail at import
        return f"CuPy failed to import: {exc}"
    try:
        ok = cupy.is_available()
    except Exception as exc:
        return f"CuPy is installed but cannot use a GPU: {exc}"
    if not ok:
        detail = ""
        try:  # ask the runtime for its own words (it raises instead of returning 0 devices)
            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            detail = f": {exc}"
        return f"CuPy is installed but no usable CUDA GPU or driver was found (cupy.is_available() is False){detail}"
    return None


class CupyBackend(CupyFused, Backend):
    name = "cupy"

    def __init__(self, device: Any = None) -> None:
        super().__init__()
        reason = probe()
        if reason is not None:
            raise BackendUnavailable(f"backend 'cupy' is not available: {reason}")
        import array_api_compat.cupy as xp
        import cupy

        self._cp = cupy
        self.xp = xp
        self.array_type = cupy.ndarray
        if isinstance(device, str):
            device = int(device.split(":")[-1]) if device not in ("cuda", "gpu") else 0
        self.device = cupy.cuda.Device(0 if device is None else device)
        self._gen = cupy.random.default_rng()

    @property
    def device_name(self) -> str:
        return f"cuda:{self.device.id}"

    def asarray(self, obj: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        with self.device:
            out = self._cp.asarray(obj, dtype=self.dtype(dtype) if dtype is not None else None)
            if copy and out is obj:
                out = out.copy()
            return out

    def to_numpy(self, x: Any) -> np.ndarray:
        return self._cp.asnumpy(x)

    @contextlib.contextmanager
    def device_context(self):
        """Make this backend's GPU current inside the block (array-api-compat's CuPy creation
        functions ignore ``device=``, so temporaries follow the current device)."""
        with self.device:
            yield

    def nccl_module(self) -> Any:
        """``cupy.cuda.nccl`` when NCCL is usable (multi-process gradient reduction), else None."""
        try:
            from cupy.cuda import nccl
        except Exception:
            return None
        return nccl if getattr(nccl, "available", True) else None

    def current_stream_ptr(self) -> int:
        """The raw pointer of CuPy's current stream (where NCCL calls are queued)."""
        return self._cp.cuda.get_current_stream().ptr

    def synchronize(self) -> None:
        self.device.synchronize()

    def manual_seed(self, seed: int) -> None:
        super().manual_seed(seed)
        self._gen = self._cp.random.default_rng(seed)

    def get_rng_state(self) -> dict:
        # CuPy's generator state cannot be serialised: the checkpoint records that honestly.
        return {"kind": "cupy-unserialisable"}

    def set_rng_state(self, state: dict) -> None:
        if state.get("kind") not in ("cupy-unserialisable",):
            raise ValueError(f"backend 'cupy': cannot restore RNG state of kind {state.get('kind')!r}")

    def _real(self, shape, dtype):
        dt = self.dtype(dtype)
        return dt if dt in (self._cp.float32, self._cp.float64) else self._cp.float32

    def uniform(self, shape, low, high, dtype):
        with self.device:
            u = self._gen.random(tuple(shape), dtype=self._real(shape, dtype))
            return (u * (high - low) + low).astype(self.dtype(dtype), copy=False)

    def normal(self, shape, mean, std, dtype):
        with self.device:
            z = self._gen.standard_normal(tuple(shape), dtype=self._real(shape, dtype))
            return (z * std + mean).astype(self.dtype(dtype), copy=False)

    def bernoulli(self, shape, p, dtype):
        with self.device:
            return (self._gen.random(tuple(shape), dtype=self._cp.float32) < p).astype(self.dtype(dtype))

    def permutation(self, n):
        with self.device:  # argsort of uniforms: only the generator's core methods are needed
            return self._cp.argsort(self._gen.random(n)).astype(self._cp.int64)

    def randint(self, shape, low, high):
        with self.device:
            u = self._gen.random(tuple(shape))
            return self._cp.minimum(self._cp.floor(u * (high - low)) + low, high - 1).astype(self._cp.int64)

    def scatter_add(self, target, indices, values):
        import cupyx

        cupyx.scatter_add(target, indices, values)
        return target

    def erf(self, x):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x).astype(x.dtype, copy=False)

    def sliding_windows(self, x, window, axes):
        from cupy.lib.stride_tricks import sliding_window_view

        return sliding_window_view(x, window, axis=axes)
