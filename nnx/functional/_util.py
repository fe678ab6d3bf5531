"""Helpers shared by the functional kernels."""

from __future__ import annotations

from typing import Any

import backends


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
