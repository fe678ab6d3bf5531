"""nnx's CPU thread setting: the BLAS pool (through threadpoolctl) and nnx's own pool of worker
threads for elementwise work, set together by :func:`set_num_threads` (as ``torch.set_num_threads``).

NumPy's ufuncs release the GIL, so a large elementwise pass split into row chunks runs on
several cores at once. :func:`parallel_rows` does that for the NumPy adapter's fused kernels:
the rows ``[0, n)`` are cut into ``get_num_threads()`` contiguous chunks, chunk 0 runs on the
calling thread and the others on the pool. Only elementwise work is split (every element is
computed by the same operations whatever the chunking), so results are bit-identical for every
thread count; reductions stay whole. Arrays under :data:`MIN_PARALLEL_ELEMENTS` stay on one
thread (measured: below it, handing chunks to the pool costs more than it saves).

:func:`split_matmul` cuts a batch of matrix products over the same pool, with OpenBLAS held at one
thread (:func:`blas_one_thread`), so that OpenBLAS's spinning workers do not take the cores the
pool's next elementwise pass needs.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from .addresses import addr

__all__ = ["MIN_PARALLEL_ELEMENTS", "MIN_POOL_MACS", "MIN_SPLIT_MACS", "blas_one_thread", "get_num_threads",
           "hold_blas_one_thread", "parallel_rows", "pool_matmul", "set_num_threads", "split_matmul"]

#: Elementwise passes over fewer elements than this run on one thread. Measured with
#: benchmarks/bench_threads.py (2-vCPU Xeon VM, NumPy 2, float32 multiply-add pass, 1 -> 2 threads):
#: 2^18 elements 0.51x (the pool hand-off costs ~120 us there), 2^20 1.25x, 2^22 1.7x.
MIN_PARALLEL_ELEMENTS = 1 << 20

_lock = threading.Lock()
_state: dict[str, Any] = {"threads": None, "default": None, "pool": None, "limiter": None}


def _default_threads() -> int:
    for var in ("NNX_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def get_num_threads() -> int:
    """Threads nnx uses on the CPU: its elementwise pool and (once set) the BLAS.

    Default: ``NNX_NUM_THREADS``, else ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` /
    ``MKL_NUM_THREADS``, else the number of cores, read at the first call (every kernel asks:
    reading four variables and the core count each time cost 7.8 us a call).
    """
    n = _state["threads"]
    if n is None:
        n = _state["default"]
        if n is None:
            n = _state["default"] = _default_threads()
    return n


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
    from . import host_kernels  # the C pool (host_pool.c) keeps its threads between runs: fewer now

    lib = host_kernels.loaded()
    if lib is not None and lib.pool_workers() > n - 1:
        lib.pool_shutdown()


def _pool(n: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _state["pool"]
        if pool is None or pool._max_workers != n - 1:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="nnx")
            _state["pool"] = pool
        return pool


def _forget_pool_in_child() -> None:
    """After ``fork`` the child has none of the pool's threads (an executor copied from the parent
    would queue tasks that never run): start a new pool on first use."""
    global _lock
    _lock = threading.Lock()
    _state["pool"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


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


# ---------------------------------------------------------------- BLAS held at one thread
_blas: dict[str, Any] = {}


def _numpy_openblas() -> Any:
    """The ctypes handle of the OpenBLAS NumPy links, or None (another BLAS, or several OpenBLAS
    copies loaded and NumPy's not identifiable)."""
    if "lib" in _blas:
        return _blas["lib"]
    lib = None
    try:
        import threadpoolctl

        libs = threadpoolctl.ThreadpoolController().select(internal_api="openblas").lib_controllers
        here = os.path.dirname(os.path.dirname(np.__file__))
        ours = [c for c in libs if os.path.dirname(os.path.realpath(c.filepath)).startswith(here + os.sep + "numpy")]
        pick = ours if ours else libs
        if len(pick) == 1:
            lib = pick[0].dynlib
    except Exception:  # noqa: BLE001 -- what needs it is only an optimisation
        lib = None
    _blas["lib"] = lib
    return lib


def _symbol(lib: Any, names: tuple[str, ...]) -> Any:
    """The first of ``names`` that ``lib`` exports, or None."""
    for name in names:
        f = getattr(lib, name, None)
        if f is not None:
            return f
    return None


def _openblas_functions() -> tuple[Callable[[int], None], Callable[[], int]] | None:
    """``(set_num_threads, get_num_threads)`` of NumPy's OpenBLAS, or None."""
    if "fns" in _blas:
        return _blas["fns"]
    fns = None
    lib = _numpy_openblas()
    if lib is not None:
        names = [(f"{prefix}_{{}}_num_threads{suffix}") for prefix in ("openblas", "scipy_openblas")
                 for suffix in ("", "64_")]
        s = _symbol(lib, tuple(n.format("set") for n in names))
        g = _symbol(lib, tuple(n.format("get") for n in names))
        if s is not None and g is not None:
            g.restype = ctypes.c_int
            s.argtypes, s.restype = [ctypes.c_int], None
            fns = (s, g)
    _blas["fns"] = fns
    return fns


def cblas_gemm() -> tuple[int, int, bool] | None:
    """``(address of cblas_sgemm, address of cblas_dgemm, ilp64)`` of NumPy's OpenBLAS, for C
    code that runs the products np.matmul would (the recurrent time loops of host_kernels.c);
    ``ilp64``: its integers are 64-bit (``USE64BITINT`` in its build configuration). None where
    NumPy's BLAS is not an OpenBLAS that says how it was built."""
    if "gemm" in _blas:
        return _blas["gemm"]
    found = None
    lib = _numpy_openblas()
    if lib is not None:
        config = _symbol(lib, ("scipy_openblas_get_config64_", "scipy_openblas_get_config", "openblas_get_config64_",
                               "openblas_get_config"))
        sgemm, dgemm = (_symbol(lib, (f"scipy_cblas_{t}gemm64_", f"scipy_cblas_{t}gemm", f"cblas_{t}gemm64_",
                                      f"cblas_{t}gemm")) for t in "sd")
        if config is not None and sgemm is not None and dgemm is not None:
            config.restype, config.argtypes = ctypes.c_char_p, []
            words = (config() or b"").split()
            address = ctypes.cast(sgemm, ctypes.c_void_p).value, ctypes.cast(dgemm, ctypes.c_void_p).value
            if words[:1] == [b"OpenBLAS"] and all(address):
                found = (address[0], address[1], b"USE64BITINT" in words)
    _blas["gemm"] = found
    return found


@contextmanager
def blas_one_thread() -> Iterator[bool]:
    """Hold NumPy's OpenBLAS at one thread inside the block (yields False, holding nothing, where
    that BLAS is not OpenBLAS): for GEMMs that nnx's pool splits itself. The setting is
    process-wide, as OpenBLAS's is; it is restored on leaving, exceptions included."""
    fns = _openblas_functions()
    if fns is None:
        yield False
        return
    set_n, get_n = fns
    old = get_n()
    set_n(1)
    try:
        yield True
    finally:
        set_n(old)


#: Products under this many multiply-adds run whole on the calling thread. Measured (2-vCPU Xeon
#: VM, OpenBLAS 0.3.31, float32, 2 threads; OpenBLAS's own threads / split over the pool):
#: 16 x (64x64 @ 64x4096) 3.06 / 2.89 ms, 16 x (64x4096 @ 4096x64) 4.49 / 3.49 ms, but
#: 32 x (64x64 @ 64x256) (34M) 0.70 / 0.70 ms and LeNet's per-sample products (7-15M) level or worse.
MIN_SPLIT_MACS = 1 << 26


def hold_blas_one_thread() -> None:
    """Set NumPy's OpenBLAS to one thread (if it is not already) for good: called when nnx's C
    pool runs on more than one thread or runs a task that calls the BLAS. OpenBLAS's workers spin
    ~0.1 s after each threaded GEMM, and with nnx's spinning workers there are more busy threads
    than cores (measured, LeNet-5 at 2 threads on the 2-vCPU VM: 10.0 ms per step with OpenBLAS at
    2 threads, 4.3 ms at 1). nnx splits its own products over its pool instead
    (:func:`pool_matmul`); threadpoolctl can raise the setting again for other NumPy work."""
    fns = _openblas_functions()
    if fns is not None and fns[1]() != 1:
        fns[0](1)


#: products under this many multiply-adds run whole on the calling thread (:func:`pool_matmul`).
#: Measured with benchmarks/bench_pool.py (2-vCPU Xeon VM, float32, square products, numpy.matmul
#: at one thread -> the pool at two): 2^21 multiply-adds 0.95x, 2^23 1.53x, 2^25 1.79x.
MIN_POOL_MACS = 1 << 22

#: With nnx's own GEMM on (``host_kernels.own_gemm_wanted``), float32 products from this many
#: multiply-adds run it (:func:`pool_matmul`), on one thread too; smaller ones take numpy.matmul,
#: whose call costs ~7 us less than the hand-off. Measured (the Zen 5 VM, OpenBLAS's Haswell kernel,
#: one thread, pool_matmul / numpy.matmul): 64x64 @ 64x32 9.3 / 3.2 us, 64x120 @ 120x84 15.1 /
#: 12.1, 64x128 @ 128x128 (2^20) 17.3 / 18.6, 64x256 @ 256x128 27.2 / 36.0, 128x256 @ 256x256 82 / 137.
MIN_OWN_MACS = 1 << 20

#: With nnx's own GEMM on, float32 products from this many multiply-adds are cut over the threads
#: (:data:`MIN_POOL_MACS` for BLAS's). Measured (the Zen 5 VM, 1 -> 2 threads): 64x128 @ 128x64
#: (2^19) 1.07x, 64x256 @ 256x128 (2^21) 1.37x, 64x400 @ 400x120 1.46x, 64x512 @ 512x256 1.76x;
#: LeNet-5's three 64x400 @ 400x120 products 106-115 -> 74-86 us a step.
MIN_OWN_POOL_MACS = 1 << 21

#: rows (or columns) of a 2-d product's part at least (:func:`pool_matmul`)
MIN_POOL_SIDE = 32


def _gemm_operand(x: Any, rows: int, cols: int) -> tuple[Any, int, int, int]:
    """``(array, trans, ld, batch stride)`` of ``x`` (2-d or 3-d, last two axes ``rows x cols``)
    for cblas: row-major as is (111) or a transposed row-major matrix (112); a copy where neither."""
    item = x.itemsize
    st = x.strides
    batch = st[0] // item if x.ndim == 3 else 0
    if x.ndim == 3 and (st[0] % item or st[0] < 0):
        x = np.ascontiguousarray(x)
        st, batch = x.strides, rows * cols
    if st[-1] == item and st[-2] % item == 0 and st[-2] >= cols * item:
        return x, 111, st[-2] // item, batch
    if st[-2] == item and st[-1] % item == 0 and st[-1] >= rows * item:
        return x, 112, st[-1] // item, batch
    x = np.ascontiguousarray(x)
    return x, 111, cols, rows * cols if x.ndim == 3 else 0


def pool_matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``numpy.matmul(a, b)`` (into ``out`` where given) on nnx's C thread pool, NumPy's own cblas
    GEMM (or nnx's, ``host_gemm.c``, where it is on) at one thread per part: a 2-d product cut
    into one part per thread by rows of the result, or by its columns where they are more (each
    part packs its block of one operand and all of the other); a batch (``a`` or ``b`` 3-d, the
    other 2-d or 3-d with the same batch) cut by the batch. None where it does not apply (one
    thread, products under :data:`MIN_POOL_MACS` multiply-adds, other shapes, dtypes or layouts,
    no host kernels, a BLAS that is not OpenBLAS); the caller then takes ``numpy.matmul``. With
    nnx's GEMM on, float32 products from :data:`MIN_OWN_MACS` multiply-adds run it on one thread
    too. Deterministic for a given thread count; 2-d products agree with one thread to rounding
    (OpenBLAS's kernels for a block of rows need not round as for the whole; nnx's do, bit for
    bit)."""
    n = get_num_threads()
    from . import host_kernels

    if type(a) is not np.ndarray or type(b) is not np.ndarray:
        return None
    lib = host_kernels.kernels()
    own = lib is not None and a.dtype == np.float32 and lib.own_gemm
    if n < 2 and not own:
        return None
    gemm = cblas_gemm()
    if (lib is None or gemm is None or a.ndim not in (2, 3) or b.ndim not in (2, 3) or a.dtype != b.dtype
            or a.dtype not in (np.float32, np.float64)):
        return None
    m, k = a.shape[-2:]
    cols = b.shape[-1]
    batch = a.shape[0] if a.ndim == 3 else b.shape[0] if b.ndim == 3 else 1
    if b.shape[-2] != k or (a.ndim == b.ndim == 3 and a.shape[0] != b.shape[0]) or 0 in (m, k, cols, batch):
        return None
    flat = a.ndim == b.ndim == 2
    if (n < 2 or batch * m * k * cols < (MIN_OWN_POOL_MACS if own else MIN_POOL_MACS)
            or (flat and max(m, cols) < 2 * MIN_POOL_SIDE)):
        if not own or batch * m * k * cols < MIN_OWN_MACS:
            return None  # small: numpy.matmul on the calling thread costs less than the hand-off
        n = 1  # nnx's GEMM on the calling thread
    shape = (m, cols) if flat else (batch, m, cols)
    if out is not None and (type(out) is not np.ndarray or out.shape != shape or out.dtype != a.dtype
                            or out.strides[-1] != out.itemsize or (out.ndim == 3 and out.strides[0] % out.itemsize)
                            or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        return None
    if out is not None and out.strides[-2] < cols * out.itemsize:
        return None
    c = np.empty(shape, dtype=a.dtype) if out is None else out
    a, ta, lda, sa = _gemm_operand(a, m, k)
    b, tb, ldb, sb = _gemm_operand(b, k, cols)
    fn = gemm[0] if a.dtype == np.float32 else gemm[1]
    ldc = c.strides[-2] // c.itemsize
    if c.ndim == 2:
        by_cols = int(cols > m)  # each part packs all of the smaller side's operand
        # parts of at least MIN_POOL_SIDE rows (columns) and MIN_POOL_MACS / 2 multiply-adds: on many
        # cores, thin slices would each pack the other operand whole for little work
        parts = max(1, min(n, max(m, cols) // MIN_POOL_SIDE,
                           2 * m * k * cols // max(1, MIN_OWN_POOL_MACS if own else MIN_POOL_MACS)))
        lib.run("gemm", a.dtype, (fn, int(gemm[2]), ta, tb, m, cols, k, addr(a), lda, addr(b), ldb,
                                  addr(c), ldc, parts, by_cols), parts, m * k * cols, parts)
    else:
        sc = c.strides[0] // c.itemsize
        lib.run("gemm_batch", a.dtype, (fn, int(gemm[2]), ta, tb, m, cols, k, addr(a), lda, sa, addr(b),
                                        ldb, sb, addr(c), ldc, sc), batch, batch * m * k * cols, n)
    return c


def split_matmul(a: Any, b: Any) -> Any:
    """``numpy.matmul(a, b)`` on nnx's threads only: OpenBLAS is held at one thread, and a large
    batch of products (``a`` or ``b`` 3-d, the other 2-d or 3-d with the same batch) is cut over
    nnx's pool by its batch, each chunk one-thread GEMMs. 2-d products run whole on the calling
    thread (OpenBLAS's kernels for a block of rows need not round as for the whole matrix).

    Why: OpenBLAS's worker threads spin for a while (~0.1 s) after each threaded GEMM, so the
    elementwise passes that nnx's pool runs next find their second core taken (measured: the
    Winograd F(4x4) input transform at 2 threads 1.4 ms alone, 2.4 ms right after a threaded GEMM;
    a 128-channel Winograd convolution did not speed up at all from 1 to 2 threads while its 3-wide
    filter-transform products woke OpenBLAS's threads). Held at one thread, OpenBLAS leaves its
    workers asleep, and a batch of products needs one hand-off instead of one synchronisation per
    product. Each product is the same one-thread GEMM whatever the chunking, so the result is
    bit-identical for every thread count.
    Other shapes and dtypes, one thread and a BLAS that is not OpenBLAS take ``numpy.matmul``."""
    got = pool_matmul(a, b)
    if got is not None:
        return got
    n = get_num_threads()
    if (n <= 1 or a.ndim < 2 or b.ndim < 2 or max(a.ndim, b.ndim) > 3 or a.dtype != b.dtype
            or a.dtype not in (np.float32, np.float64) or _openblas_functions() is None):
        return np.matmul(a, b)
    m, k = a.shape[-2:]
    cols = b.shape[-1]
    batch = a.shape[0] if a.ndim == 3 else b.shape[0] if b.ndim == 3 else 1
    if b.shape[-2] != k or (a.ndim == b.ndim == 3 and a.shape[0] != b.shape[0]):
        return np.matmul(a, b)  # numpy's own error
    whole = a.ndim == b.ndim == 2 or batch < n or batch * m * k * cols < MIN_SPLIT_MACS
    if whole and _openblas_functions()[1]() == 1:  # already held (hold_blas_one_thread): no set and restore
        return np.matmul(a, b)
    with blas_one_thread():
        if whole:
            return np.matmul(a, b)
        out = np.empty((batch, m, cols), dtype=a.dtype)
        pa = (lambda lo, hi: a[lo:hi]) if a.ndim == 3 else (lambda lo, hi: a)
        pb = (lambda lo, hi: b[lo:hi]) if b.ndim == 3 else (lambda lo, hi: b)
        parallel_rows(lambda lo, hi: np.matmul(pa(lo, hi), pb(lo, hi), out=out[lo:hi]), batch,
                      MIN_PARALLEL_ELEMENTS)
        return out
