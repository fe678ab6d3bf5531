"""nnx's CPU thread setting: the BLAS pool (through threadpoolctl) and nnx's own pool of worker
threads for elementwise work, set together by :func:`set_num_threads` (as ``torch.set_num_threads``).

NumPy's ufuncs release the GIL, so a large elementwise pass split into row chunks runs on
several cores at once. :func:`parallel_rows` does that for the NumPy adapter's fused kernels:
the rows ``[0, n)`` are cut into ``get_num_threads()`` contiguous chunks, chunk 0 runs on the
calling thread and the others on the pool. Only elementwise work is split (every element is
computed by the same operations whatever the chunking), so results are bit-identical for every
thread count; reductions stay whole. Arrays under :data:`MIN_PARALLEL_ELEMENTS` stay on one
thread (measured: below it, handing chunks to the pool costs more than it saves).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["MIN_PARALLEL_ELEMENTS", "get_num_threads", "parallel_rows", "set_num_threads"]

#: Elementwise passes over fewer elements than this run on one thread. Measured with
#: benchmarks/bench_threads.py (2-vCPU Xeon VM, NumPy 2, float32 multiply-add pass, 1 -> 2 threads):
#: 2^18 elements 0.51x (the pool hand-off costs ~120 us there), 2^20 1.25x, 2^22 1.7x.
MIN_PARALLEL_ELEMENTS = 1 << 20

_lock = threading.Lock()
_state: dict[str, Any] = {"threads": None, "pool": None, "limiter": None}


def _default_threads() -> int:
    for var in ("NNX_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def get_num_threads() -> int:
    """Threads nnx uses on the CPU: its elementwise pool and (once set) the BLAS.

    Default: ``NNX_NUM_THREADS``, else ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` /
    ``MKL_NUM_THREADS``, else the number of cores.
    """
    n = _state["threads"]
    return _default_threads() if n is None else n


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for the BLAS (every library threadpoolctl finds: OpenBLAS, MKL, BLIS,
    OpenMP) and for nnx's elementwise pool, as ``torch.set_num_threads`` does.

    >>> import nnx
    >>> old = nnx.get_num_threads()
    >>> nnx.set_num_threads(1); nnx.get_num_threads()
    1
    >>> nnx.set_num_threads(old)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive int, got {n!r}")
    with _lock:
        old_pool = _state["pool"]
        _state["threads"] = n
        _state["pool"] = None
        try:
            import threadpoolctl
        except ImportError:  # the BLAS keeps its own setting; nnx's pool follows n
            _state["limiter"] = None
        else:
            _state["limiter"] = threadpoolctl.threadpool_limits(limits=n)
    if old_pool is not None:
        old_pool.shutdown(wait=True)


def _pool(n: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _state["pool"]
        if pool is None or pool._max_workers != n - 1:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="nnx")
            _state["pool"] = pool
        return pool


def row_chunks(n_rows: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(lo, hi)`` ranges covering ``[0, n_rows)``, sizes differing by <= 1."""
    parts = max(1, min(parts, n_rows))
    base, extra = divmod(n_rows, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def parallel_rows(fn: Callable[[int, int], None], n_rows: int, n_elements: int) -> None:
    """Call ``fn(lo, hi)`` over row chunks covering ``[0, n_rows)``: on the calling thread alone
    when one thread is set or ``n_elements < MIN_PARALLEL_ELEMENTS``, else one chunk per thread
    (the first on the caller). ``fn`` must only write its own rows. Exceptions propagate."""
    n = get_num_threads()
    if n <= 1 or n_rows <= 1 or n_elements < MIN_PARALLEL_ELEMENTS:
        fn(0, n_rows)
        return
    chunks = row_chunks(n_rows, n)
    pool = _pool(n)
    futures = [pool.submit(fn, lo, hi) for lo, hi in chunks[1:]]
    try:
        fn(*chunks[0])
    finally:
        for f in futures:
            f.result()
