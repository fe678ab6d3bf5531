"""Argument and input checks shared by the kernels and the layers (one definition each).

A functional op validates its own arguments and raises errors that start with ``where`` (the
op's name, or the calling layer's description, so that a layer's error names the layer). A layer
runs the checks that concern it only: that the input lives with its parameters and has their
dtype. Every message says what was expected and what was got.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import check_floating, check_same_backend

__all__ = ["check_array_input", "check_input", "floating_dtype_seen", "itemsize", "ntuple", "pair", "rank_error"]


def ntuple(where: str, name: str, value: Any, n: int, allow_zero: bool = False) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``n`` ints) as a tuple of ``n`` ints, validated.

    >>> ntuple("conv2d", "stride", 2, 2)
    (2, 2)
    """
    low = 0 if allow_zero else 1
    if type(value) is int and value >= low:  # the common cases first: a layer asks on every call
        return (value,) * n
    if type(value) is tuple and len(value) == n and all(type(v) is int and v >= low for v in value):
        return value
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(items) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in items):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{where}: {name} must be a {kind} integer or a tuple of {n} {kind} integers, "
                         f"got {value!r}")
    return items


def pair(where: str, name: str, value: Any, allow_zero: bool = False) -> tuple[int, int]:
    """:func:`ntuple` with ``n = 2``; a one-element sequence is used for both axes (as PyTorch's
    functional ops, ``F.avg_pool2d(x, 3, padding=(1,))``).

    >>> pair("max_pool2d", "padding", (0, 1), allow_zero=True), pair("avg_pool2d", "padding", [1], allow_zero=True)
    ((0, 1), (1, 1))
    """
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = (value[0], value[0])
    return ntuple(where, name, value, 2, allow_zero)  # type: ignore[return-value]


def itemsize(xp: Any, dtype: Any) -> int:
    """Bytes per element of ``dtype`` (floating, complex, integer or bool), from the standard's ``finfo``/``iinfo``.

    >>> import pytest; xp = pytest.importorskip("array_api_strict")   # any Array API namespace
    >>> itemsize(xp, xp.float64), itemsize(xp, xp.int32), itemsize(xp, xp.bool)
    (8, 4, 1)
    """
    if xp.isdtype(dtype, "bool"):
        return 1
    if xp.isdtype(dtype, "integral"):
        return xp.iinfo(dtype).bits // 8
    bits = xp.finfo(dtype).bits
    return bits // 4 if xp.isdtype(dtype, "complex floating") else bits // 8


def rank_error(where: str, x: Any, ndims: Sequence[int], layout: str) -> ValueError:
    """The error for an input of the wrong rank (with a hint when only the batch axis is missing)."""
    want = " or ".join(f"{n}-D" for n in ndims)
    hint = "; add a batch axis with x[None, ...]" if x.ndim == min(ndims) - 1 else ""
    return ValueError(f"{where}: expected {want} input of shape {layout}, got shape {tuple(x.shape)}{hint}")


def check_input(where: str, x: Any, ref: Any) -> None:
    """A layer's boundary check: ``x`` is an array of the library, device and dtype of ``ref`` (a parameter)."""
    check_same_backend(where, x, ref)
    check_floating(where, x, ref.dtype)


_FLOAT_DTYPES: set = set()


def floating_dtype_seen(x: Any) -> bool:
    """Fast test for parameter-free layers: ``x`` is an array whose (library, dtype) already passed
    :func:`check_array_input`."""
    try:
        return (type(x), x.dtype) in _FLOAT_DTYPES
    except (AttributeError, TypeError):
        return False


def check_array_input(where: str, x: Any) -> None:
    """A parameter-free layer's boundary check: ``x`` is a floating-point array (the result is cached
    per library and dtype, so the common case costs one set lookup)."""
    if floating_dtype_seen(x):
        return
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{where}: expected an array, got {type(x).__name__}")
    check_floating(where, x)
    try:
        _FLOAT_DTYPES.add((type(x), x.dtype))  # the library's type first: no cross-library ==
    except TypeError:
        pass
