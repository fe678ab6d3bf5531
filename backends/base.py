"""The adapter interface: what nnx needs from an array library beyond the Array API standard.

A :class:`Backend` wraps one array namespace (``xp``) on one device. Everything nnx computes goes
through ``xp``, which must follow the Python Array API standard. What the standard lacks is a
method here, each with a pure-standard (or host-side) fallback so that a minimal library works
unchanged; an adapter overrides a method only where its library has something faster or more
faithful (NumPy's ``np.add.at``, CuPy's ``erf``, a device random generator).

Adapters live in this package (one small file each) or in third-party packages that register
through the ``nnx.backends`` entry-point group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .fused_api import FusedOps

Array = Any


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked for but cannot run on this machine (the message says why)."""


class Backend(FusedOps):
    """One array library on one device, as nnx sees it.

    Attributes:
        name: registry name (``"numpy"``, ``"cupy"``, ``"torch"``, ``"array_api_strict"``).
        xp: the Array API namespace used for every computation.
        device: the library's device object where new arrays are created.
        array_type: the library's array class (used to find the backend of an array).
    """

    name: str = "base"
    xp: Any = None
    device: Any = None
    array_type: type = object
    #: True when arrays live in host memory, so reading a value back (a validity check) is cheap
    host_memory: bool = False
    #: every array of this library lives on one device (NumPy): device comparisons can be skipped
    single_device: bool = False
    #: True while a program is being traced for compilation (``nnx.compile_step`` on JAX): arrays
    #: are placeholders, so nothing may be read back or kept outside the program's outputs
    tracing: bool = False
    #: True when the library's arrays can be written in place (``x[i] = v``, ``x += v`` changes
    #: ``x``). Immutable libraries (JAX) declare False; the registry checks the claim once.
    mutable: bool = True

    def __init__(self) -> None:
        self._host_rng = np.random.default_rng()

    # ----------------------------------------------------------------- identity
    def __repr__(self) -> str:
        return f"<nnx backend {self.name!r} device={self.device_name}>"

    @property
    def device_name(self) -> str:
        """A short, human readable name of this backend's device (``"cpu"``, ``"cuda:0"``)."""
        return str(self.device)

    def owns(self, x: Array) -> bool:
        """True when ``x`` is an array of this backend's library (any device)."""
        return isinstance(x, self.array_type)

    def device_of(self, x: Array) -> Any:
        """The device ``x`` lives on (the standard's ``x.device``)."""
        return x.device

    # ----------------------------------------------------------------- dtypes
    def dtype(self, name: str | Any) -> Any:
        """The library's dtype object for a name such as ``"float32"`` (dtype objects pass through)."""
        if isinstance(name, str):
            try:
                return getattr(self.xp, name)
            except AttributeError:
                raise TypeError(f"backend {self.name!r} has no dtype {name!r}") from None
        return name

    def isdtype(self, dtype: Any, kind: Any) -> bool:
        """``xp.isdtype(dtype, kind)``, remembered per ``(dtype, kind)``: NumPy's is Python (~1.2 us a
        call) and a training step asks it a few dozen times (argument and target checks)."""
        cache = self.__dict__.get("_isdtype")
        if cache is None:
            cache = self.__dict__["_isdtype"] = {}
        try:
            return cache[dtype, kind]
        except KeyError:
            got = cache[dtype, kind] = bool(self.xp.isdtype(dtype, kind))
            return got
        except TypeError:  # an unhashable dtype or kind: ask every time
            return bool(self.xp.isdtype(dtype, kind))

    @staticmethod
    def dtype_name(dtype: Any) -> str:
        """Canonical string name of a dtype (``"float32"``) for any library."""
        text = str(dtype)
        if "'" in text:  # "<class 'numpy.float32'>"
            text = text.split("'")[1]
        return text.rsplit(".", 1)[-1]  # "torch.float32", "array_api_strict.float32"

    # ----------------------------------------------------------------- host <-> backend
    def asarray(self, obj: Any, dtype: Any = None, copy: bool | None = None) -> Array:
        """Put ``obj`` (a host array, nested lists, a scalar) on this backend's device."""
        if dtype is not None:
            dtype = self.dtype(dtype)
        return self.xp.asarray(obj, dtype=dtype, device=self.device, copy=copy)

    def to_numpy(self, x: Array) -> np.ndarray:
        """Host (NumPy) copy of ``x``. Fallback: DLPack, then the buffer protocol."""
        try:
            return np.from_dlpack(x)
        except Exception:
            return np.asarray(x)

    def synchronize(self) -> None:
        """Block until all queued work on the device is done (no-op on synchronous libraries)."""

    def launch_meter(self) -> Any:
        """A context manager counting this backend's device operations (see ``nnx.count_launches``).

        Adapters that can count override it; the default says how to count instead."""
        raise NotImplementedError(
            f"backend {self.name!r} has no launch meter; count on nnx.launches.counting_backend() "
            "(NumPy arithmetic, counted as CuPy would launch) or on the torch backend")

    # ----------------------------------------------------------------- random numbers
    # The standard has no random numbers. The fallback draws on the host with NumPy's PCG64 and
    # copies to the device; adapters with a device generator override these.
    def manual_seed(self, seed: int) -> None:
        """Seed this backend's random generator."""
        self._host_rng = np.random.default_rng(seed)

    def get_rng_state(self) -> dict:
        """JSON-serialisable state of the generator (for checkpoints)."""
        return {"kind": "numpy-pcg64", "state": _jsonable(self._host_rng.bit_generator.state)}

    def set_rng_state(self, state: dict) -> None:
        """Restore a state returned by :meth:`get_rng_state`."""
        if state.get("kind") != "numpy-pcg64":
            raise ValueError(f"backend {self.name!r}: cannot restore RNG state of kind {state.get('kind')!r}")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["state"]
        self._host_rng = rng

    def uniform(self, shape: tuple[int, ...], low: float, high: float, dtype: Any) -> Array:
        """Samples of U(low, high) with the given shape and dtype."""
        host = self._host_rng.uniform(low, high, size=shape)
        return self.asarray(host, dtype=dtype)

    def normal(self, shape: tuple[int, ...], mean: float, std: float, dtype: Any) -> Array:
        """Samples of N(mean, std**2)."""
        host = self._host_rng.normal(mean, std, size=shape)
        return self.asarray(host, dtype=dtype)

    def bernoulli(self, shape: tuple[int, ...], p: float, dtype: Any) -> Array:
        """0/1 samples with P(1) = p, as ``dtype`` (used for dropout masks)."""
        host = self._host_rng.random(size=shape) < p
        return self.asarray(host, dtype=dtype)

    def permutation(self, n: int) -> Array:
        """A random permutation of ``range(n)`` as an int64 array."""
        return self.asarray(self._host_rng.permutation(n), dtype=self.xp.int64)

    def randint(self, shape: tuple[int, ...], low: int, high: int) -> Array:
        """Integers in [low, high) as int64."""
        return self.asarray(self._host_rng.integers(low, high, size=shape), dtype=self.xp.int64)

    # ----------------------------------------------------------------- kernels the standard lacks
    def scatter_add(self, target: Array, indices: Array, values: Array) -> Array:
        """Add rows of ``values`` into ``target[indices]`` along axis 0, summing duplicates.

        ``target`` is ``(N, ...)``, ``indices`` is 1-D of length ``M`` and ``values`` is
        ``(M, ...)``. Returns the updated array (in place where the library allows). Fallback:
        a one-hot matrix product, which is exact and pure standard.
        """
        xp = self.xp
        n = target.shape[0]
        classes = xp.arange(n, dtype=indices.dtype, device=self.device_of(indices))
        onehot = xp.astype(indices[:, None] == classes[None, :], values.dtype)
        flat = xp.reshape(values, (values.shape[0], -1))
        added = xp.reshape(xp.matmul(xp.matrix_transpose(onehot), flat), target.shape)
        return target + added

    def erf(self, x: Array) -> Array:
        """The error function, elementwise. Fallback: series and continued fraction (pure standard)."""
        return erf_standard(self.xp, x)

    def qr(self, a: Array) -> tuple[Array, Array]:
        """Reduced QR factorisation of a 2-D array (the standard's optional linalg extension,
        else NumPy on the host)."""
        linalg = getattr(self.xp, "linalg", None)
        if linalg is not None and hasattr(linalg, "qr"):
            return linalg.qr(a)
        q, r = np.linalg.qr(self.to_numpy(a))
        return self.asarray(q, dtype=a.dtype), self.asarray(r, dtype=a.dtype)

    def matmul(self, a: Array, b: Array) -> Array:
        """``matmul(a, b)`` of the standard; the NumPy adapter holds OpenBLAS at one thread and cuts
        large batches of products over nnx's thread pool (``threads.split_matmul``)."""
        return self.xp.matmul(a, b)

    def matmul_into(self, a: Array, b: Array, out: Array) -> Array:
        """Write ``matmul(a, b)`` into ``out`` (an existing array of the result's shape) and return
        ``out``. Fallback: compute, then copy in; adapters with ``out=`` write directly."""
        out[...] = self.xp.matmul(a, b)
        return out

    def sliding_windows(self, x: Array, window: tuple[int, ...], axes: tuple[int, ...]) -> Array | None:
        """Read-only strided view of all windows of ``x`` (as NumPy's ``sliding_window_view``).

        Returns None when the library has no strided views; callers then use the pure-standard
        formulation (a sum over kernel offsets of strided slices).
        """
        return None

    # ----------------------------------------------------------------- writes by index
    # The standard leaves in-place writes unsupported on libraries whose arrays are immutable.
    # Every write of nnx goes through these two methods and uses what they return: on a mutable
    # library they write in place and return ``x`` itself (no copy); on an immutable one they
    # return a new array (array-api-extra's ``at``, the well-kept implementation of exactly this).
    def at_set(self, x: Array, index: Any, values: Array | float) -> Array:
        """``x[index] = values``; returns the updated array (``x`` itself where writes are in place)."""
        if self.mutable:
            x[index] = values
            return x
        import array_api_extra as xpx

        return xpx.at(x, index).set(values, xp=self.xp)

    def at_add(self, x: Array, index: Any, values: Array | float) -> Array:
        """``x[index] += values`` for an index without repeats (use :meth:`scatter_add` for
        repeated indices); returns the updated array."""
        if self.mutable:
            x[index] += values
            return x
        import array_api_extra as xpx

        return xpx.at(x, index).add(values, xp=self.xp)

    def shift_add(self, out: Array, cols: Array, offsets: Sequence[int], run: int, lo: int = 0) -> Array:
        """The flat-shift convolution's col2im: ``out[lo:hi, :, :, s_k:s_k + run] += cols[:, :, k]``
        for each offset ``s_k``, ``hi = lo + cols.shape[0]``; ``out`` ``(N, G, Cg, L)``, ``cols``
        ``(n, G, kk, Cg, run)``. Returns the updated ``out`` (itself where writes are in place).
        Fallback: one :meth:`at_add` per offset; adapters may fuse it."""
        hi = lo + cols.shape[0]
        for k, s in enumerate(offsets):
            out = self.at_add(out, (slice(lo, hi), ..., slice(s, s + run)), cols[:, :, k, ...])
        return out

    # ----------------------------------------------------------------- fused updates
    def adam_update_(
        self,
        param: Array,
        grad: Array,
        exp_avg: Array,
        exp_avg_sq: Array,
        *,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        bias_correction1: float,
        bias_correction2: float,
        max_exp_avg_sq: Array | None = None,
    ) -> tuple[Array, Array, Array, Array | None]:
        """One Adam update; returns ``(param, exp_avg, exp_avg_sq, max_exp_avg_sq)``, which the caller stores.

        ``param -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)`` with ``m``, ``v`` the running
        moments (``v`` the running maximum with AMSGrad, when ``max_exp_avg_sq`` is given); the
        same arithmetic order as ``torch.optim.Adam``. On a mutable library the arrays are
        updated in place and returned; on an immutable one (JAX) the returned arrays are new.
        Adapters may fuse it.
        """
        xp = self.xp
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * (grad * grad)
        v = exp_avg_sq
        if max_exp_avg_sq is not None:
            max_exp_avg_sq = v = xp.maximum(max_exp_avg_sq, exp_avg_sq)
        denom = xp.sqrt(v) / bias_correction2 ** 0.5 + eps  # ** 0.5: a traced step count works too (jax.jit)
        param -= (lr / bias_correction1) * (exp_avg / denom)
        return param, exp_avg, exp_avg_sq, max_exp_avg_sq


def _jsonable(obj: Any) -> Any:
    """Turn NumPy scalars/arrays inside a nested structure into plain Python values."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


def erf_standard(xp: Any, x: Array) -> Array:
    """erf(x) with only standard functions, accurate to ~1e-15 in float64.

    For ``|x| < 3`` the series ``erf(x) = 2/sqrt(pi) exp(-x^2) sum 2^n x^(2n+1) / (2n+1)!!``
    (all terms positive, no cancellation); for ``|x| >= 3`` the continued fraction of erfc.
    """
    a = xp.abs(x)
    small = xp.minimum(a, 3.0)
    x2 = small * small
    term = small
    total = small
    for n in range(1, 80):
        term = term * (2.0 * x2 / (2.0 * n + 1.0))
        total = total + term
    series = _TWO_OVER_SQRT_PI * xp.exp(-x2) * total
    big = xp.maximum(a, 3.0)
    # erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))), evaluated backwards
    frac = big
    for k in range(60, 0, -1):
        frac = big + (k / 2.0) / frac
    erfc_big = _INV_SQRT_PI * xp.exp(-big * big) / frac
    result = xp.where(a < 3.0, series, 1.0 - erfc_big)
    return xp.where(x < 0, -result, result)
