"""A cheap estimate of the memory a recorded backward closure keeps alive (for the tape warning)."""

from __future__ import annotations

from typing import Any


def _array_nbytes(v: Any) -> int:
    n = getattr(v, "nbytes", None)
    if isinstance(n, int):
        return n
    shape, dtype = getattr(v, "shape", None), getattr(v, "dtype", None)
    if not isinstance(shape, tuple) or dtype is None:
        return 0
    size = 1
    for d in shape:
        size *= d if isinstance(d, int) else 0
    bits = "".join(ch for ch in str(dtype) if ch.isdigit())
    return size * (int(bits) // 8 if bits else 4)


def closure_nbytes(fn: Any, depth: int = 2, _seen: set | None = None) -> int:
    """Bytes of the arrays a backward closure keeps alive (its cells, and those of closures it holds,
    ``depth`` levels deep; each array counted once). An estimate: cheap enough to run per record."""
    seen = _seen if _seen is not None else set()
    total = 0
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            v = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        items = v if isinstance(v, (tuple, list)) and len(v) <= 16 else (v,)
        for x in items:
            if id(x) in seen:
                continue
            seen.add(id(x))
            if isinstance(getattr(x, "shape", None), tuple) and hasattr(x, "dtype"):
                total += _array_nbytes(x)
            elif depth > 1 and getattr(x, "__closure__", None):
                total += closure_nbytes(x, depth - 1, seen)
    return total
