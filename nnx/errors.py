"""Exceptions and the input checks that layers run at their boundary (rule 5 of the design).

Every message names the layer or function, what it expected and what it got, and, where there
is one, how to fix it.
"""

from __future__ import annotations

from typing import Any

import nnx_backends as backends


class BackendMismatchError(TypeError):
    """An array from one backend (or device) met parameters or arrays of another."""


class NonFiniteError(RuntimeError):
    """The training loss (or the weights about to be saved) became NaN or infinite."""

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class NotRecordedError(RuntimeError):
    """``backward`` was called but the matching forward recorded nothing."""


def describe(x: Any) -> str:
    """Short description of an array for error messages: backend, shape, dtype."""
    try:
        b = backends.backend_of(x)
        where = b.name if b.name == "numpy" else f"{b.name} on {b.device_of(x)}"
    except TypeError:
        t = type(x)
        where = f"{t.__module__}.{t.__name__}"
    shape = tuple(getattr(x, "shape", ()))
    dtype = backends.Backend.dtype_name(getattr(x, "dtype", "?"))
    return f"{where} array of shape {shape} and dtype {dtype}"


def check_same_backend(where: str, x: Any, ref: Any, what: str = "input", ref_what: str = "the parameters") -> None:
    """Raise BackendMismatchError unless ``x`` is an array of the same library and device as ``ref``."""
    import nnx_backends as backends

    plural = ref_what.endswith("s")
    if type(x) is type(ref):
        x_device, ref_device = backends.device_of(x), backends.device_of(ref)
        if x_device == ref_device:
            return
        raise BackendMismatchError(
            f"{where}: {what} is on device {x_device} but {ref_what} {'are' if plural else 'is'} on {ref_device}; "
            "move one of them (nnx.asarray(x, device=...) or model.to(device=...))"
        )
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{where}: expected an array as {what}, got {type(x).__name__}")
    try:
        ref_backend = backends.backend_of(ref).name
    except TypeError:
        ref_backend = type(ref).__module__
    try:
        x_backend = backends.backend_of(x).name
    except TypeError:
        x_backend = None
    move = f" or move the model with model.to({x_backend!r})" if x_backend else ""
    raise BackendMismatchError(
        f"{where}: {what} is a {describe(x)}, but {ref_what} live{'' if plural else 's'} on backend {ref_backend!r}; "
        f"put the {what} there with nnx.asarray(x, backend={ref_backend!r}){move}"
    )


def is_floating(x: Any) -> bool:
    """Whether array ``x`` has a real floating dtype, asked of its library's namespace
    (``xp.isdtype``: bfloat16 and any future float types included); host data that belongs to no
    backend is judged by its NumPy dtype kind."""
    try:
        b = backends.backend_of(x)
    except TypeError:
        return getattr(getattr(x, "dtype", None), "kind", "") == "f"
    return b.isdtype(x.dtype, "real floating")


def check_floating(where: str, x: Any, ref_dtype: Any = None, what: str = "input") -> None:
    """Raise TypeError unless ``x`` is floating point (and, if given, of dtype ``ref_dtype``)."""
    if not is_floating(x):
        name = backends.Backend.dtype_name(x.dtype)
        raise TypeError(
            f"{where}: expected a floating-point {what}, got dtype {name}; "
            "convert with nnx.asarray(x) (floats become float32)"
        )
    if ref_dtype is not None and x.dtype != ref_dtype:
        name = backends.Backend.dtype_name(x.dtype)
        raise TypeError(
            f"{where}: {what} has dtype {name} but the parameters are "
            f"{backends.Backend.dtype_name(ref_dtype)}; convert the input or call model.to(dtype=...)"
        )


def check_ndim(where: str, x: Any, allowed: tuple[int, ...], meaning: str = "") -> None:
    """Raise ValueError unless ``x.ndim`` is one of ``allowed``."""
    if x.ndim not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        extra = f" {meaning}" if meaning else ""
        raise ValueError(f"{where}: expected {want} input{extra}, got shape {tuple(x.shape)}")


def check_dim(where: str, x: Any, axis: int, size: int, name: str) -> None:
    """Raise ValueError unless ``x.shape[axis] == size``."""
    if x.shape[axis] != size:
        raise ValueError(
            f"{where}: expected input with {name} = {size} (dimension {axis}), got shape {tuple(x.shape)}"
        )


def check_positive_int(where: str, name: str, value: Any, allow_zero: bool = False) -> int:
    """Validate an integer hyper-parameter and return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{where}: {name} must be {kind} integer, got {value!r}")
    return value


def check_probability(where: str, name: str, value: Any, inclusive_high: bool = False) -> float:
    """Validate a probability such as a dropout rate and return it as a float."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok_high = is_number and (value <= 1 if inclusive_high else value < 1)
    if not is_number or not (0 <= value and ok_high):
        interval = "[0, 1]" if inclusive_high else "[0, 1)"
        raise ValueError(f"{where}: {name} must be in {interval}, got {value!r}")
    return float(value)
