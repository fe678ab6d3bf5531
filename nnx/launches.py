"""The launch meter: count the device operations (kernel launches) of any nnx code.

On a GPU every array operation is a kernel launch of 5-10 µs, so the number of operations per
training step bounds the speed at small sizes. The count is exact and deterministic, so tests can
pin it.

>>> b = nnx.launches.counting_backend()          # NumPy arithmetic, counted as CuPy would launch
>>> with nnx.use_backend(b):
...     x = nnx.asarray([[1.0, 2.0]])
...     with nnx.count_launches() as n:
...         y = x * 2 + 1
>>> n.total, dict(n.by_op)
(2, {'multiply': 1, 'add': 1})

What counts: every call of the namespace that creates or writes an array (``zeros`` yes,
``empty`` no), every operator on arrays, ``astype``/``copy``, gathers and ``x[...] = v``, and each
adapter method once (a fused kernel is one launch). Views and metadata (``reshape``,
``permute_dims``, ``.shape``, ``.dtype``) are not launches. Host reads (``float(x)``) are counted
apart, as ``syncs``. On the torch backend the meter counts the ATen operators PyTorch dispatches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import nnx_backends as backends
from nnx_backends.counting import CountingBackend, LaunchCount

from .backend import get_backend

__all__ = ["LaunchCount", "count_launches", "counting_backend"]

_COUNTING: dict[bool, CountingBackend] = {}


def counting_backend(fused: bool = True) -> CountingBackend:
    """The NumPy backend with launch counting (one instance per ``fused`` flag).

    Create the model and data with it current (``nnx.use_backend(counting_backend())``) so that
    every array is counted. ``fused=True`` counts each adapter method as one launch, as CuPy runs it.
    """
    b = _COUNTING.get(fused)
    if b is None:
        b = _COUNTING[fused] = CountingBackend(fused=fused)
        backends._by_type[b.array_type] = b  # arrays of this backend find it (backend_of)
    else:
        backends._by_type[b.array_type] = b
    return b


@contextlib.contextmanager
def count_launches(backend: Any = None) -> Iterator[LaunchCount]:
    """Count the device operations run inside the block on ``backend`` (default: the current one).

    Yields a :class:`LaunchCount` (``.total``, ``.by_op``, ``.syncs``), complete when the block
    ends. Raises NotImplementedError on a backend that cannot count (the message says which can).
    """
    b = backend if backend is not None else get_backend()
    with b.launch_meter() as count:
        yield count
