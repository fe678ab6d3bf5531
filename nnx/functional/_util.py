"""Helpers shared by the functional kernels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends


def namespace(x: Any) -> Any:
    """The Array API namespace of ``x`` (one dict lookup: resolve it once per op, not per call)."""
    return backends.backend_of(x).xp


def reduce_loss(xp: Any, per_item: Any, reduction: str, where: str) -> Any:
    """Apply ``reduction`` ("mean" | "sum" | "none") to a per-element loss."""
    if reduction == "mean":
        return xp.asarray(xp.mean(per_item))  # a 0-d array (NumPy would give a scalar)
    if reduction == "sum":
        return xp.asarray(xp.sum(per_item))
    if reduction == "none":
        return per_item
    raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def functional_form(forward: Callable) -> Callable:
    """The plain functional form of an op: ``name(*args)`` returns only the output of ``name_forward``."""

    def fn(*args: Any, **kwargs: Any) -> Any:
        return forward(*args, **kwargs)[0]

    name = forward.__name__.removesuffix("_forward")
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = forward.__module__
    fn.__doc__ = (forward.__doc__ or "") + f"\n\nFunctional form: returns only the output of ``{forward.__name__}``."
    return fn
