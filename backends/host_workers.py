"""Host-side helpers of ``nnx.data.DataLoader`` worker processes (the NumPy part of them).

``nnx/`` may not import NumPy, so what a worker process needs NumPy for lives here:

* :func:`seed_host_rngs` seeds Python's ``random`` and NumPy's global RNG in a worker (as
  ``torch.utils.data`` workers do);
* :func:`collate_host` stacks a list of samples into one batch of **plain host arrays** (NumPy
  arrays, in tuples or dicts following the samples' structure), floats cast to the loader's
  floating dtype. That is all a worker sends back to the main process: no backend arrays, no
  models, no callables. Placing the batch on the backend (CuPy, torch, ...) is the main process's job.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

__all__ = ["collate_host", "host_leaf", "seed_host_rngs"]


def seed_host_rngs(seed: int) -> None:
    """Seed Python's ``random`` and NumPy's global (legacy) RNG with ``seed`` (any non-negative int)."""
    seed = int(seed)
    random.seed(seed)
    # the legacy seeder takes 32-bit words: split the seed so that distinct seeds stay distinct
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF]
    np.random.seed(words)


def host_leaf(x: Any, where: str) -> np.ndarray:
    """``x`` (a NumPy array or scalar, a number, or an array with ``__array__`` such as a CPU torch
    tensor) as a NumPy array; anything else raises a TypeError naming ``where``."""
    if isinstance(x, np.ndarray):
        return x
    try:
        out = np.asarray(x)
    except Exception as exc:  # e.g. a CuPy array: device data has no place in a worker process
        raise TypeError(f"{where}: a sample of type {type(x).__name__} cannot be turned into a host (NumPy) "
                        f"array in a worker process ({exc}); return host data from the dataset") from None
    if out.dtype == object:
        raise TypeError(f"{where}: a sample of type {type(x).__name__} is not numeric data; worker processes send "
                        f"back only numeric host arrays (use collate_fn to batch other data)")
    return out


def collate_host(samples: list[Any], float_dtype: str, where: str = "DataLoader worker") -> Any:
    """Stack samples (arrays, numbers, or tuples/lists/dicts of them) into one host batch.

    Tuples and lists become tuples, dicts stay dicts; every leaf is one new NumPy array with a
    leading batch axis, floating leaves cast to ``float_dtype``.
    """
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(collate_host([s[i] for s in samples], float_dtype, where) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: collate_host([s[k] for s in samples], float_dtype, where) for k in first}
    out = np.stack([host_leaf(s, where) for s in samples])
    if out.dtype.kind == "f" and out.dtype != float_dtype:
        out = out.astype(float_dtype)
    return out
