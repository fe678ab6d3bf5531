"""Data addresses of NumPy arrays for the host kernels' ctypes calls.

``ndarray.ctypes.data`` builds a ``numpy._core._internal._ctypes`` object on every access (0.78 us
measured on the 2-vCPU AMD EPYC VM, 2026-11-29); a training step of LeNet-5 hands ~90 addresses to
C, the MLP ~60. :func:`addr` reads the same pointer where NumPy's C API does (``PyArray_DATA``: the
``data`` field that follows the object header in ``PyArrayObject_fields``, part of NumPy's ABI)
through ``ctypes.c_void_p.from_address``: 0.10 us.

It is used only where it was checked on import: CPython (``id`` is an address), and a set of
arrays (owning, sliced, transposed, 0-d, empty, over a foreign buffer) whose addresses it must
agree on with ``ctypes.data``; otherwise, and for anything that is not exactly an ``ndarray``,
``ctypes.data`` is read. The caller keeps the array alive for the call, as with ``ctypes.data``
(the address of a temporary is the address of freed memory either way).
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

__all__ = ["addr", "fast"]

_from_address = ctypes.c_void_p.from_address
_DATA_OFFSET = object.__basicsize__  # PyObject_HEAD's size: 16 bytes, more on free-threaded builds
_ndarray = np.ndarray


def _slow(a: np.ndarray) -> int:
    """The data address of ``a``: ``a.ctypes.data``."""
    return a.ctypes.data


def _fast(a: np.ndarray) -> int:
    """The data address of ``a`` (``a.ctypes.data``), read from the array's struct."""
    if type(a) is not _ndarray:
        return a.ctypes.data  # a subclass, or not an array: NumPy's answer (or its error)
    return _from_address(id(a) + _DATA_OFFSET).value or 0


def _agrees() -> bool:
    if sys.implementation.name != "cpython":
        return False
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    buf = bytearray(64)
    cases = (base, base[1:, 2:], base.T, base[::2, ::-1], np.ones(()), np.empty((0, 3)),
             np.frombuffer(buf, dtype=np.uint8)[5:], np.zeros(1000, np.int64)[999:])
    try:
        return all(_fast(a) == a.ctypes.data for a in cases)
    except Exception:  # noqa: BLE001 -- any surprise means: do not use it
        return False


#: True where :func:`addr` reads the field directly (checked on import)
fast = _agrees()

#: the data address of an ndarray: :func:`_fast` where :data:`fast`, else :func:`_slow`
addr = _fast if fast else _slow
