"""Fused host kernels for the NumPy adapter: ``host_kernels.c``, compiled on first use with the
machine's C compiler and loaded through :mod:`ctypes`.

NumPy runs one pass over memory per operation; a layer norm is six of them forward and seven
backward, a column softmax five. The kernels in ``host_kernels.c`` do the same arithmetic in one
or two passes over data in cache (the references in ``norm.py``, ``softmax.py`` and ``fused.py``
define what they compute, and the tests hold them to it). They are optional: when no compiler
is found, the build fails, or ``NNX_HOST_KERNELS=0`` is set, :func:`kernels` returns ``None``
and the adapter runs its NumPy passes (``reason()`` says why).

The shared library is cached under ``NNX_CACHE_DIR``, else ``$XDG_CACHE_HOME/nnx``, else
``~/.cache/nnx``, else ``<tmp>/nnx-<uid>``: the first of them that is ours and writable by nobody
else (a library loaded from a folder another user can write would run their code), named by a hash of the source,
the compiler, its flags and the CPU, so a changed file, compiler or machine builds anew. The
build is written to a temporary name and renamed into place, so processes that build at once
(test workers, data-parallel ranks) never load a partial file. ``-march=native`` is used where
the compiler accepts it (the CPU is part of the name).

ctypes releases the GIL for the call. The kernels a training step spends most time in run on
nnx's C thread pool (``host_pool.c``, included by ``host_kernels.c``): :meth:`HostKernels.run`
hands a kernel's rows to workers that spin for the next task, ~0.2 us against ~100 us for a
hand-off through Python's thread pool on the 2-vCPU VM, so kernels of tens of microseconds
split profitably. Their tasks are listed in ``_TASKS``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .addresses import addr
from .threads import get_num_threads, hold_blas_one_thread

__all__ = ["ENV", "HostKernels", "kernels", "loaded", "ptr", "reason", "supports", "words", "writable_over"]

#: set to 0 to turn the host kernels off (the NumPy passes run instead)
ENV = "NNX_HOST_KERNELS"
SOURCE = Path(__file__).with_name("host_kernels.c")
#: sources SOURCE includes (part of the build's name)
_INCLUDED = (Path(__file__).with_name("host_pool.c"), Path(__file__).with_name("host_gemm.c"))
_BASE_FLAGS = ["-O3", "-fPIC", "-shared", "-pthread", "-fopenmp-simd", "-fno-math-errno", "-ffp-contract=fast",
               "-std=c99"]

_lock = threading.Lock()
_state: dict[str, Any] = {"done": False, "lib": None, "reason": "not built yet"}

_P = ctypes.c_void_p
_I = ctypes.c_longlong
_D = ctypes.c_double
_SIGNATURES = {
    "nnx_ln_fwd": [_P, _P, _P, _I, _I, _D, _P, _P, _P],
    "nnx_ln_bwd": [_P, _P, _P, _P, _I, _I, _P],
    "nnx_colmax_sub": [_P, _I, _I, _I, _P],
    "nnx_colsum_scale": [_P, _I, _I, _I, _P, _P, _P],
    "nnx_softmax_cols_bwd": [_P, _P, _I, _I, _I, _P],
    "nnx_bias_relu_fwd": [_P, _P, _I, _I, _P],
    "nnx_relu_bwd": [_P, _P, _I, _P],
    "nnx_wino2_in": [_P, _I, _I, _I, _I, _I, _I, _I, _I, _I, _I, _P, _P],
    "nnx_wino2_out": [_P, _I, _I, _I, _I, _I, _I, _I, _I, _P],
    "nnx_wino4_in": [_P, _I, _I, _I, _I, _I, _I, _I, _I, _I, _I, _P, _P],
    "nnx_wino4_out": [_P, _I, _I, _I, _I, _I, _I, _I, _I, _P, _P],
    "nnx_tanh": [_P, _I, _P],
    "nnx_sigmoid": [_P, _I, _P],
    "nnx_lstm_fwd": [_P, _I, _P, _I, _I, _I, _P, _I, _P, _I, _P, _I],
    "nnx_lstm_bwd": [_P, _I, _P, _I, _P, _I, _P, _I, _I, _I, _P, _I, _P, _I],
    "nnx_gru_fwd": [_P, _I, _P, _I, _P, _I, _P, _I, _I, _P, _I, _P, _I],
    "nnx_gru_bwd": [_P, _I, _P, _I, _P, _I, _I, _I, _P, _I, _P, _I, _P, _I],
}
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
#: kernels with a task for nnx_pool_run (``nnx_task_<name>_<f32|f64>`` in host_kernels.c)
_TASKS = ("maxpool_fwd", "maxpool_bwd", "conv_direct_fwd", "conv_direct_dw", "gemm_conv_fwd", "gemm_conv_bwd",
          "gemm", "gemm_batch", "lstm_scan_fwd", "lstm_scan_bwd", "gru_scan_fwd", "gru_scan_bwd", "rnn_scan_fwd",
          "rnn_scan_bwd", "bias_relu_fwd", "relu_bwd", "shift_add", "adam", "wino_block", "wino_in", "wino_out",
          "wino_dy", "wino_filter", "wino_filter_grad", "bn_stats", "bn_fwd", "bn_bwd", "chan_sum", "ce_fwd", "ce_bwd",
          "adam_multi", "sgd_multi")
#: tasks that call NumPy's cblas GEMM: OpenBLAS must run them at one thread per part
_BLAS_TASKS = frozenset({"gemm_conv_fwd", "gemm_conv_bwd", "gemm", "gemm_batch", "lstm_scan_fwd", "lstm_scan_bwd",
                         "gru_scan_fwd", "gru_scan_bwd", "rnn_scan_fwd", "rnn_scan_bwd", "wino_block"})

#: Kernels over fewer elements than this run whole on the calling thread. Measured with
#: benchmarks/bench_pool.py (2-vCPU Xeon VM, the float32 ReLU backward task, 1 -> 2 threads):
#: 2^14 elements 0.97x, 2^16 1.45x, 2^18 4.3x (in cache), 2^20 1.9x.
MIN_TASK_ELEMENTS = 1 << 15

#: How long (microseconds) the C pool's workers spin for the next task before they sleep:
#: ``NNX_SPIN_US``, default below. 1000 us since 2026-11-29: on the Zen 5 VM at 2 threads (alone in a
#: process, three alternations, samples/s) LeNet-5 28,845-29,899 against 27,213-28,805 at 200 us,
#: the MLP 74,479-76,860 against 71,417-75,528, the LSTM 20,659-21,454 against 20,182-20,896, the
#: ResNet block level (497-506 / 497-510): a worker that slept in a gap of 200 us to 1 ms between
#: two pooled kernels (the loss, a small product) took ~35 us to wake (the MLP's two ReLU backward
#: passes: 45-65 us a step split over two threads, 20 us on one, 14 us with the worker spinning).
SPIN_ENV = "NNX_SPIN_US"
DEFAULT_SPIN_US = 1000


#: Which GEMM the host kernels' float32 products run (``host_gemm.c``): ``NNX_GEMM=nnx`` nnx's own
#: AVX-512 kernel wherever the build has it, ``blas`` NumPy's OpenBLAS always, ``auto`` (default)
#: nnx's where OpenBLAS runs a kernel without AVX-512 on a CPU with it (:func:`own_gemm_wanted`).
GEMM_ENV = "NNX_GEMM"
#: OpenBLAS core types (threadpoolctl's ``architecture``) whose sgemm uses AVX-512
_AVX512_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})


def own_gemm_wanted(available: bool) -> tuple[bool, str]:
    """Whether nnx's own float32 GEMM should run the host kernels' products, and why.

    ``auto``: where nnx's kernel is built (the compiler targets AVX-512 on this CPU) and NumPy's
    BLAS is an OpenBLAS running a core type without AVX-512 (``OPENBLAS_CORETYPE=Haswell``, or a
    CPU its detection does not know). Measured on the 2-vCPU AMD EPYC (Zen 5) VM, one thread,
    float32 (benchmarks/bench_gemm.py, nnx / OpenBLAS Haswell / OpenBLAS SkylakeX): 64x128 @
    128x512 (the LSTM benchmark's recurrent step) 36.8 / 74.5 / 42.7 us; 128x784 @ 784x512 439 /
    826 / 467 us; 512x2048 @ 2048x161 1.62 / 2.77 / 1.49 ms; 64x64 @ 64x64 3.8 / 5.4 / 2.9 us.
    Against an AVX-512 OpenBLAS the training steps were slower with it at 1 thread (LSTM 10,286
    against 11,024 samples/s, ResNet block 394 / 415), so OpenBLAS keeps those; other BLAS
    libraries (MKL, BLIS) are kept too."""
    mode = os.environ.get(GEMM_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "nnx", "blas"):
        raise ValueError(f"{GEMM_ENV} must be 'auto', 'nnx' or 'blas', got {os.environ[GEMM_ENV]!r}")
    if not available:
        return False, "nnx's GEMM is not built here (the compiler does not target AVX-512 on this CPU)"
    if mode != "auto":
        return mode == "nnx", f"{GEMM_ENV}={mode}"
    try:
        import threadpoolctl

        info = threadpoolctl.ThreadpoolController().select(internal_api="openblas").info()
    except Exception:  # noqa: BLE001 -- no threadpoolctl view: keep the BLAS
        return False, "the BLAS's kernel is unknown: BLAS kept"
    cores = {str(i.get("architecture") or "").lower() for i in info}
    if len(cores) != 1 or "" in cores:
        return False, "NumPy's BLAS is not one identifiable OpenBLAS: BLAS kept"
    (core,) = cores
    if core in _AVX512_CORES:
        return False, f"OpenBLAS runs its {core} kernel (AVX-512): BLAS kept"
    return True, f"OpenBLAS runs its {core} kernel (no AVX-512) on a CPU with AVX-512: nnx's GEMM"


class HostKernels:
    """The loaded library: ``fn(name, dtype)`` is the C function for float32 or float64 arrays."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self._fns: dict[tuple[str, np.dtype], Any] = {}
        for name, argtypes in _SIGNATURES.items():
            for dt, suf in _SUFFIX.items():
                f = getattr(lib, f"{name}_{suf}")
                f.argtypes = argtypes
                f.restype = None
                self._fns[(name, dt)] = f
        self._tasks = {(name, dt): ctypes.cast(getattr(lib, f"nnx_task_{name}_{suf}"), ctypes.c_void_p).value
                       for name in _TASKS for dt, suf in _SUFFIX.items()}
        self._pool_run = lib.nnx_pool_run
        self._pool_run.argtypes, self._pool_run.restype = [_P, _P, _I, _I, _I], None
        self.pool_shutdown = lib.nnx_pool_shutdown
        self.pool_shutdown.argtypes, self.pool_shutdown.restype = [], None
        self.pool_workers = lib.nnx_pool_workers
        self.pool_workers.argtypes, self.pool_workers.restype = [], _I
        self.spin_us = _spin_us()
        self._set_own_gemm = lib.nnx_set_own_gemm
        self._set_own_gemm.argtypes, self._set_own_gemm.restype = [_I], None
        self._own_gemm_state = lib.nnx_own_gemm
        self._own_gemm_state.argtypes, self._own_gemm_state.restype = [], _I
        available = lib.nnx_own_gemm_available
        available.argtypes, available.restype = [], _I
        self.own_gemm_available = bool(available())
        self.sgemm = lib.nnx_sgemm_f32
        self.sgemm.argtypes = [_I, _I, _I, _I, _I, _P, _I, _P, _I, _D, _P, _I]
        self.sgemm.restype = _I
        #: True while float32 products of the host kernels run nnx's own GEMM (``host_gemm.c``)
        self.own_gemm = False
        on, self.own_gemm_reason = own_gemm_wanted(self.own_gemm_available)
        self.set_own_gemm(on)

    def set_own_gemm(self, on: bool) -> bool:
        """Run the float32 products of the host kernels on nnx's GEMM (where it is built) or on
        BLAS; returns the setting before."""
        before = self.own_gemm
        self._set_own_gemm(int(bool(on)))
        self.own_gemm = bool(self._own_gemm_state())
        return before

    def run(self, name: str, dtype: np.dtype, args: tuple[int | None, ...], n_rows: int, n_elements: int,
            threads: int | None = None) -> None:
        """The task of kernel ``name`` over rows ``[0, n_rows)``, its arguments ``args`` (ints;
        None for a NULL pointer): on ``threads`` (default ``threads.get_num_threads()``) threads
        of the C pool, or on the calling thread alone under :data:`MIN_TASK_ELEMENTS` elements.
        A task that indexes per-thread scratch by its part needs ``min(n_rows, threads)`` blocks."""
        if threads is None:
            threads = get_num_threads()
        if n_elements < MIN_TASK_ELEMENTS:
            threads = 1
        if threads > 1 or name in _BLAS_TASKS:  # OpenBLAS's spinning workers would take the pool's cores,
            hold_blas_one_thread()  # and a task's GEMMs must not each wake them
        words = _words(len(args))(*[0 if a is None else a for a in args])
        self._pool_run(self._tasks[(name, dtype)], words, n_rows, threads, self.spin_us)

    def fn(self, name: str, dtype: np.dtype) -> Any:
        return self._fns[(name, dtype)]

    def __repr__(self) -> str:
        return f"HostKernels({str(self.path)!r})"


def _spin_us() -> int:
    value = os.environ.get(SPIN_ENV, "").strip()
    return int(value) if value.isdigit() else DEFAULT_SPIN_US


def supports(*arrays: np.ndarray) -> bool:
    """True when every array is a C-contiguous float32/float64 ndarray of one dtype."""
    dt = arrays[0].dtype
    return dt in _SUFFIX and all(type(a) is np.ndarray and a.dtype == dt and a.flags.c_contiguous for a in arrays)


def writable_over(out: np.ndarray, *inputs: np.ndarray) -> bool:
    """``out`` can take an elementwise kernel's result over ``inputs``: writeable, and each input
    either is ``out`` element for element (in place) or does not overlap it (a partial overlap
    would be read after it was written; NumPy buffers that case, so it takes the NumPy pass)."""
    if not out.flags.writeable:
        return False
    for a in inputs:
        if a is not out and np.may_share_memory(a, out) and not (
                addr(a) == addr(out) and a.shape == out.shape and a.strides == out.strides):
            return False
    return True


def words(*xs: float) -> tuple[int, ...]:
    """The bits of the doubles ``xs`` as signed 64-bit words (a task's float arguments)."""
    return struct.unpack(f"={len(xs)}q", struct.pack(f"={len(xs)}d", *xs))


@functools.cache
def _words(n: int) -> type:
    """The ctypes array type of ``n`` 64-bit words."""
    return ctypes.c_longlong * n


def ptr(a: np.ndarray | None) -> int | None:
    """The data address of ``a`` for a ctypes call (None for NULL)."""
    return None if a is None else addr(a)


def _private(folder: str) -> bool:
    """``folder`` exists (created if need be), is ours and nobody else can write to it: a shared
    library loaded from it runs as us, so a folder another user could fill is never used."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.stat(folder)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022 and os.access(folder, os.W_OK)


def _cache_dir() -> Path | None:
    """The first private folder of ``NNX_CACHE_DIR``, ``$XDG_CACHE_HOME/nnx``, ``~/.cache/nnx`` and
    ``<tmp>/nnx-<uid>``; None when none is."""
    for cand in (os.environ.get("NNX_CACHE_DIR"),
                 os.path.join(os.environ["XDG_CACHE_HOME"], "nnx") if os.environ.get("XDG_CACHE_HOME") else None,
                 os.path.join(os.path.expanduser("~"), ".cache", "nnx"),
                 os.path.join(tempfile.gettempdir(), f"nnx-{os.getuid()}")):
        if cand and _private(cand):
            return Path(cand)
    return None


def _compiler() -> str | None:
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _build() -> tuple[HostKernels | None, str]:
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, f"turned off by {ENV}={os.environ[ENV]}"
    if sys.platform == "win32" or not hasattr(os, "getuid"):
        return None, "not built on Windows (no C compiler assumed)"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC, or install gcc/clang)"
    folder = _cache_dir()
    if folder is None:
        return None, "no private cache folder (set NNX_CACHE_DIR to a folder only you can write to)"
    source = b"".join(path.read_bytes() for path in (SOURCE, *_INCLUDED))
    version = _run([cc, "--version"]).stdout
    for flags in (_BASE_FLAGS + ["-march=native"], _BASE_FLAGS):
        key = hashlib.sha256(b"\0".join([source, cc.encode(), version.encode(), " ".join(flags).encode(),
                                         _cpu_id().encode(), platform.machine().encode()])).hexdigest()[:16]
        path = folder / f"host_kernels-{key}.so"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
            os.close(fd)
            try:
                out = _run([cc, *flags, str(SOURCE), "-o", tmp, "-lm"])
                if out.returncode != 0:
                    last = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["(no output)"]
                    err = f"{os.path.basename(cc)} failed: {last[0]}"
                    continue
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        try:
            return HostKernels(ctypes.CDLL(str(path)), path), f"loaded {path}"
        except (OSError, AttributeError) as e:
            err = f"could not load {path}: {e}"
    return None, err


def kernels() -> HostKernels | None:
    """The host kernels, built and loaded on the first call; None when unavailable (see :func:`reason`)."""
    if _state["done"]:
        return _state["lib"]
    with _lock:
        if not _state["done"]:
            try:
                lib, why = _build()
            except (OSError, subprocess.SubprocessError) as e:
                lib, why = None, f"build failed: {e}"
            _state.update(lib=lib, reason=why, done=True)
    return _state["lib"]


def loaded() -> HostKernels | None:
    """The host kernels if they are already loaded (builds nothing)."""
    return _state["lib"]


def reason() -> str:
    """Why :func:`kernels` returned what it did (the library's path, or why there is none)."""
    kernels()
    return _state["reason"]


def _reset() -> None:
    """Forget the loaded library (tests: rebuild under another environment)."""
    with _lock:
        _state.update(done=False, lib=None, reason="not built yet")
