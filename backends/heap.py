"""Keep freed large buffers in the process heap (glibc), so that a training step reuses them.

A NumPy training step allocates and frees the same large temporaries (activations, gradients,
attention scores: megabytes each) every step. glibc's malloc serves blocks above its mmap
threshold with fresh ``mmap`` calls and returns them to the kernel on ``free``, so each step
page-faults its whole working set again: measured 38 ms of kernel time in a 230 ms Transformer
encoder step (6600 page faults per step). Raising the mmap threshold to its maximum (32 MiB) and
the heap trim threshold keeps those blocks in the heap, where the next step finds them.

:func:`keep_freed_memory` does that once per process, on Linux with glibc only (a no-op elsewhere).
The cost: the process keeps up to its peak heap use mapped instead of returning freed blocks to the
kernel at once. ``NNX_MALLOC_TUNE=0`` in the environment turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30

_done: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once (see the module doc); True when the settings were applied.

    >>> isinstance(keep_freed_memory(), bool)
    True
    """
    if "result" in _done:
        return _done["result"]
    ok = False
    if os.environ.get("NNX_MALLOC_TUNE", "1").strip() not in ("0", "false", "no") and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # musl or no libc.so.6: leave the allocator alone
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _done["result"] = ok
    return ok
