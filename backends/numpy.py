"""NumPy adapter: the CPU reference backend.

NumPy >= 2 implements the Array API standard in its main namespace, so ``xp`` is ``numpy``
itself (no wrapper cost in hot paths). Extensions use NumPy's own fast paths: ``np.add.at`` for
scatter-add, ``sliding_window_view`` for convolutions, ``out=`` buffers for the fused Adam step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Backend, erf_standard
from .heap import keep_freed_memory
from .numpy_direct_conv import NumpyDirectConv
from .numpy_fused import NumpyFused
from .numpy_gemm_conv import NumpyGemmConv
from .numpy_norm import NumpyNorm
from .numpy_pool import NumpyPool
from .numpy_winograd import NumpyWinograd
from .threads import pool_matmul, split_matmul


def probe() -> str | None:
    """None when NumPy works here, else the reason."""
    if int(np.__version__.split(".")[0]) < 2:
        return f"nnx needs NumPy >= 2.0 (Array API support); found {np.__version__}"
    return None


class NumpyBackend(NumpyNorm, NumpyPool, NumpyWinograd, NumpyDirectConv, NumpyGemmConv, NumpyFused, Backend):
    name = "numpy"
    host_memory = True
    single_device = True
    xp = np
    array_type = np.ndarray

    def __init__(self, device: Any = None) -> None:
        super().__init__()
        if device not in (None, "cpu", 0, "0"):
            raise ValueError(f"backend 'numpy' has only the device 'cpu'; got {device!r}")
        self.device = "cpu"
        keep_freed_memory()  # steps reuse their freed temporaries instead of page-faulting them again

    def asarray(self, obj: Any, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(obj, dtype=self.dtype(dtype) if dtype is not None else None, copy=copy)

    def owns(self, x: Any) -> bool:
        # NumPy reductions return scalars (np.float32), which belong to this backend too
        return isinstance(x, (np.ndarray, np.generic))

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def device_of(self, x: np.ndarray) -> str:
        return "cpu"

    def scatter_add(self, target: np.ndarray, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        np.add.at(target, indices, values)
        return target

    def erf(self, x: np.ndarray) -> np.ndarray:
        try:  # SciPy's erf is a compiled ufunc; use it where it is installed
            from scipy.special import erf
        except ImportError:
            return erf_standard(np, x)
        return erf(x).astype(x.dtype, copy=False)

    def matmul_into(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        if pool_matmul(a, b, out) is not None:  # on nnx's C pool, OpenBLAS at one thread
            return out
        return np.matmul(a, b, out=out)

    def sliding_windows(self, x: np.ndarray, window: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
        return np.lib.stride_tricks.sliding_window_view(x, window, axis=axes)

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # a large batch of products is cut over nnx's pool, OpenBLAS held at one thread
        return split_matmul(a, b)
