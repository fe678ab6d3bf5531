"""Which formulation a kernel takes: the CPU-shaped one or the device-shaped one.

On a GPU every array operation is a kernel launch, so the kernels of this package have two
formulations where it matters: the CPU-shaped one (cache-sized batch chunks, scratch buffers
reused in place, hand-tuned NumPy passes) and the device-shaped one (few, large operations: no
chunking below a device-memory budget, one gather for im2col, one scatter for col2im, the
adapter's fused BatchNorm kernels). The device-shaped formulation is taken on backends whose
arrays are not in host memory (CuPy, torch on CUDA, the launch meter's CuPy mode).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["DEVICE_PATHS", "device_shaped"]

#: ``"auto"`` (device-shaped where ``not backend.host_memory``), ``"always"`` or ``"never"``
#: (tests use these to run each formulation on every backend; the environment variable
#: ``NNX_DEVICE_PATHS`` sets it at import, e.g. to run the whole suite on the device-shaped kernels).
DEVICE_PATHS = os.environ.get("NNX_DEVICE_PATHS", "auto")
if DEVICE_PATHS not in ("auto", "always", "never"):
    raise ValueError(f"NNX_DEVICE_PATHS must be 'auto', 'always' or 'never', got {DEVICE_PATHS!r}")


def device_shaped(b: Any) -> bool:
    """Whether the kernels take their device-shaped formulation on backend ``b``.

    >>> import nnx_backends
    >>> device_shaped(nnx_backends.get("numpy")) == (DEVICE_PATHS == "always")   # host memory: CPU-shaped
    True
    """
    if DEVICE_PATHS == "always":
        return True
    if DEVICE_PATHS == "never":
        return False
    return not getattr(b, "host_memory", False)
