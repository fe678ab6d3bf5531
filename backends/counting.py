"""The launch meter's machinery: count the device operations (kernel launches) of any nnx code.

Two meters, one result type (:class:`LaunchCount`):

* :class:`CountingBackend` -- NumPy arithmetic whose arrays (:class:`CountedArray`, an ``ndarray``
  subclass) count every operation as a GPU would launch it: every ufunc call (operators included,
  in place or not), every array function except views and metadata (:data:`NOT_LAUNCHES`), every
  creation that writes memory (``zeros``, ``full``, ``arange``, ... but not ``empty``), host
  copies in, ``astype``/``copy``, gathers (``x[int_array]``) and writes (``x[...] = v``). With
  ``fused=True`` (CuPy mode, the default) each adapter method (:data:`ADAPTER_COSTS`) counts as
  one launch, whatever NumPy does inside it, because CuPy runs it as one kernel; ``fused=False``
  runs the pure-standard reference of each fused method instead and counts every operation in it. Host-memory
  shortcuts are off (``host_memory = False``), as on a GPU. Exact and deterministic: nothing is
  timed or sampled.
* :func:`torch_meter` -- on the torch backend, every ATen operator PyTorch dispatches, views
  excluded (what would be a CUDA launch).

Reads of a value to the host (``float(x)``, ``x.item()``) are not launches; they are counted
separately as ``syncs`` (each one blocks a GPU).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import Backend
from .fused_api import FUSED_METHODS
from .numpy import NumpyBackend

#: array functions that are views or metadata on every GPU library (no kernel)
NOT_LAUNCHES = frozenset({
    "reshape", "transpose", "permute_dims", "matrix_transpose", "expand_dims", "squeeze", "broadcast_to",
    "broadcast_arrays", "moveaxis", "swapaxes", "ravel", "shape", "ndim", "size", "result_type", "can_cast",
    "iinfo", "finfo", "isdtype", "sliding_window_view", "as_strided", "atleast_1d", "atleast_2d", "atleast_3d",
    "split", "array_split", "unstack", "flip", "real", "empty", "empty_like", "may_share_memory",
    "shares_memory", "ascontiguousarray_view", "diagonal",
})
#: creation functions that fill memory (one launch each); ``empty`` only allocates
CREATION = frozenset({"zeros", "ones", "full", "arange", "eye", "linspace", "zeros_like", "ones_like",
                      "full_like", "tril", "triu", "asarray", "array", "ascontiguousarray"})
#: adapter methods and their launch count in CuPy mode (0: a view)
ADAPTER_COSTS: dict[str, int] = {name: 1 for name in FUSED_METHODS}
ADAPTER_COSTS.update({"layer_norm_rows_forward": 1, "layer_norm_rows_backward": 4})
ADAPTER_COSTS.update({"scatter_add": 1, "erf": 1, "matmul": 1, "matmul_into": 1, "qr": 1, "uniform": 1, "normal": 1,
                      "bernoulli": 1, "permutation": 1, "randint": 1, "sliding_windows": 0, "to_numpy": 1})


@dataclass
class LaunchCount:
    """What a launch meter saw: ``total`` launches, ``by_op`` per operation name, ``syncs`` (host reads)."""

    by_op: Counter = field(default_factory=Counter)
    syncs: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Number of device operations (kernel launches)."""
        return sum(self.by_op.values())

    def __int__(self) -> int:
        return self.total

    def __repr__(self) -> str:
        top = ", ".join(f"{k}={v}" for k, v in self.by_op.most_common(8))
        return f"LaunchCount(total={self.total}, syncs={sum(self.syncs.values())}, top: {top})"


class _Meter:
    def __init__(self) -> None:
        self.current: LaunchCount | None = None
        self.depth = 0

    def hit(self, name: str) -> None:
        if self.current is not None and self.depth == 0:
            self.current.by_op[name] += 1

    def sync(self, name: str) -> None:
        if self.current is not None and self.depth == 0:
            self.current.syncs[name] += 1


METER = _Meter()


def _plain(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, CountedArray) else x


def wrap(x: Any) -> Any:
    """Turn NumPy results into :class:`CountedArray` (scalars become 0-d arrays, as on a GPU)."""
    if isinstance(x, CountedArray):
        return x
    if isinstance(x, np.ndarray):
        return x.view(CountedArray)
    if isinstance(x, np.generic):
        return np.asarray(x).view(CountedArray)
    if isinstance(x, tuple):
        return tuple(wrap(v) for v in x)
    if isinstance(x, list):
        return [wrap(v) for v in x]
    return x


@contextlib.contextmanager
def _inside() -> Iterator[None]:
    METER.depth += 1
    try:
        yield
    finally:
        METER.depth -= 1


def _is_gather(key: Any) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (np.ndarray, list)) for k in keys)


class CountedArray(np.ndarray):
    """A NumPy array that reports its operations to the active launch meter."""

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, out: Any = None, **kwargs: Any) -> Any:
        METER.hit(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        with _inside():
            result = getattr(ufunc, method)(*(_plain(x) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return wrap(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        name = func.__name__
        if name not in NOT_LAUNCHES:
            METER.hit(name)
        with _inside():
            return wrap(super().__array_function__(func, types, args, kwargs))

    def __getitem__(self, key: Any) -> Any:
        if _is_gather(key):
            METER.hit("gather")
        with _inside():
            return wrap(super().__getitem__(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        METER.hit("setitem")
        with _inside():
            super().__setitem__(key, _plain(value))

    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> Any:
        if np.dtype(dtype) != self.dtype or kwargs.get("copy", True):
            METER.hit("astype")
        with _inside():
            return wrap(super().astype(dtype, *args, **kwargs))

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        METER.hit("copy")
        with _inside():
            return wrap(super().copy(*args, **kwargs))

    def __float__(self) -> float:
        METER.sync("float")
        return float(self.view(np.ndarray))

    def __int__(self) -> int:
        METER.sync("int")
        return int(self.view(np.ndarray))

    def __bool__(self) -> bool:
        METER.sync("bool")
        return bool(self.view(np.ndarray))

    def item(self, *args: Any) -> Any:
        METER.sync("item")
        return self.view(np.ndarray).item(*args)


def _creation(name: str, fn: Any) -> Any:
    def create(*args: Any, **kwargs: Any) -> Any:
        if name in ("asarray", "ascontiguousarray") and args and isinstance(args[0], CountedArray):
            same = kwargs.get("dtype") is None or np.dtype(kwargs["dtype"]) == args[0].dtype
            if same and not kwargs.get("copy") and (name == "asarray" or args[0].flags.c_contiguous):
                return args[0]
        METER.hit(name)
        with _inside():
            return wrap(fn(*(_plain(a) for a in args), **kwargs))

    create.__name__ = name
    return create


class CountingNamespace:
    """NumPy as an Array API namespace whose creation functions return counted arrays."""

    __name__ = "numpy"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if name in CREATION:
            attr = _creation(name, attr)
        elif name in ("empty", "empty_like"):
            fn = attr

            def attr(*a: Any, **k: Any) -> Any:
                with _inside():
                    return wrap(fn(*(_plain(v) for v in a), **k))
        elif name == "take":  # out-of-range indices wrap around, as in cupy.take (no device-side error)

            def attr(x: Any, indices: Any, /, *, axis: int | None = None) -> Any:
                return np.take(x, indices, axis=axis, mode="wrap")
        self.__dict__[name] = attr
        return attr


def launches_of(name: str, args: tuple, kwargs: dict) -> int:
    """How many kernels CuPy's implementation of adapter method ``name`` launches for this call
    (``cupy_fused.py``): most are one kernel; a few add reductions that depend on the arguments."""
    if name == "bias_act_backward":  # the activation's gradient, then the bias gradient's sum
        has_bias = args[3] if len(args) > 3 else kwargs.get("has_bias", True)
        return 2 if has_bias else 1
    if name == "cross_entropy_forward":  # row kernel, then sum(loss) [and sum(weights), the division]
        return {"mean": 4, "sum": 2}.get(kwargs.get("reduction", "mean"), 1)
    if name == "cross_entropy_backward":  # row kernel [after the class weights' sum]
        weighted = (args[3] if len(args) > 3 else kwargs.get("weight")) is not None
        return 2 if weighted and kwargs.get("label_smoothing", 0.0) else 1
    if name == "batch_norm_forward":  # invstd, then the normalisation
        return 2
    if name == "batch_norm_backward":  # two channel reductions in one kernel, dx, dweight
        return 3
    if name in ("sgd_multi_step_", "adam_multi_step_"):  # the pointer table's upload, then one kernel
        return 2
    if name == "layer_norm_rows_forward":  # the row kernel [after a contiguous copy of x]
        return 1 + int(not args[0].flags.c_contiguous)
    if name == "layer_norm_rows_backward":  # [copy of dy] dy * xhat and its column sum, sum(dy), the row kernel
        dy, weight, has_bias, input_grad = args[0], args[3], args[4], args[5]
        return int(not dy.flags.c_contiguous) + 2 * int(weight is not None) + int(has_bias) + int(input_grad)
    if name == "index_in_range":  # the reduction [and the running maximum]
        return 1 if (args[3] if len(args) > 3 else kwargs.get("flag")) is None else 2
    return ADAPTER_COSTS[name]


#: adapter methods outside FUSED_METHODS whose NumPy version is a host-only rewrite of the reference
_HOST_OVERRIDES = ("adam_update_", "layer_norm_rows_forward", "layer_norm_rows_backward")


def _adapter_method(name: str, cost: int) -> Any:
    base = getattr(NumpyBackend, name)
    reference = getattr(Backend, name) if name in FUSED_METHODS or name in _HOST_OVERRIDES else base

    def method(self: CountingBackend, *args: Any, **kwargs: Any) -> Any:
        if not self.fused:  # the pure-standard reference on counted arrays: every op it runs counts
            return wrap(reference(self, *args, **kwargs))
        for _ in range(launches_of(name, args, kwargs) if cost else 0):
            METER.hit(f"adapter.{name}")
        with _inside():
            return wrap(base(self, *args, **kwargs))

    method.__name__ = name
    method.__doc__ = base.__doc__
    return method


class CountingBackend(NumpyBackend):
    """NumPy arithmetic with every launch counted (see the module docstring).

    ``fused=True`` counts each adapter method as one launch (what CuPy would launch); ``False``
    counts the NumPy operations inside them (what the pure NumPy path does).
    """

    host_memory = False  # behave like a GPU: no cheap host reads in hot paths
    array_type = CountedArray

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        super().__init__(device)
        self.fused = fused
        self.xp = CountingNamespace()

    def __repr__(self) -> str:
        return f"<nnx backend 'numpy' (launch counting, fused={self.fused})>"

    def fast_winograd_tiles(self) -> tuple[int, ...]:
        return ()  # as CuPy: no fused Winograd transforms, so convolutions count their im2col path

    def fast_batch_norm(self) -> bool:
        return False  # the meter follows device_shaped() alone, as CuPy

    def fast_activations(self) -> tuple[str, ...]:
        return ()

    def fast_max_pool(self) -> bool:
        return False

    def fast_direct_conv(self) -> bool:
        return False

    def recurrent_scan(self, cell: str, x: Any, h0: Any, c0: Any, w_hh: Any) -> bool:
        return False  # as CuPy: the time loop's per-step kernels are what a GPU launches

    def owns(self, x: Any) -> bool:
        return isinstance(x, CountedArray)

    def asarray(self, obj: Any, dtype: Any = None, copy: bool | None = None) -> Any:
        if isinstance(obj, CountedArray) and (dtype is None or np.dtype(self.dtype(dtype)) == obj.dtype) and not copy:
            return obj
        METER.hit("asarray")
        with _inside():
            return wrap(np.array(_plain(obj), dtype=self.dtype(dtype) if dtype is not None else None, copy=True))

    @contextlib.contextmanager
    def launch_meter(self) -> Iterator[LaunchCount]:
        yield from _activate()


for _name, _cost in ADAPTER_COSTS.items():
    if _name != "asarray" and hasattr(NumpyBackend, _name):
        setattr(CountingBackend, _name, _adapter_method(_name, _cost))


_counted_scatter_add = CountingBackend.scatter_add


def _wrapping_scatter_add(self: CountingBackend, target: Any, indices: Any, values: Any) -> Any:
    """Out-of-range rows wrap around, as in ``cupyx.scatter_add`` (a GPU raises no error)."""
    return _counted_scatter_add(self, target, np.asarray(_plain(indices)) % target.shape[0], values)


CountingBackend.scatter_add = _wrapping_scatter_add  # type: ignore[method-assign]


def _activate() -> Iterator[LaunchCount]:
    if METER.current is not None:
        raise RuntimeError("count_launches: a launch meter is already active (meters do not nest)")
    count = LaunchCount()
    METER.current, METER.depth = count, 0
    try:
        yield count
    finally:
        METER.current = None


@contextlib.contextmanager
def torch_meter() -> Iterator[LaunchCount]:
    """Count the ATen operators PyTorch dispatches inside the block (views and allocations excluded)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    count = LaunchCount()
    free = {"empty", "empty_like", "empty_strided", "lift_fresh", "detach", "alias"}

    class _Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            name = func.overloadpacket.__name__
            if name in ("_local_scalar_dense", "item"):
                count.syncs[name] += 1
            elif not func.is_view and name not in free and not name.startswith("_record_function"):
                count.by_op[name] += 1
            return func(*args, **(kwargs or {}))

    with _Mode():
        yield count
