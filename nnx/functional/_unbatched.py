"""Unbatched inputs (PyTorch's ``(C, L)`` / ``(C, H, W)``) for the batched window kernels.

PyTorch's convolution and pooling ops accept an input without its batch axis and return an output
without it. The kernels here are written for the batched layout; :func:`unbatched_forward` runs
one on the input with a batch axis of 1 added and removes that axis from the output (and from
the gradients of its backward), so every formulation (CPU, device-shaped) serves both layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["check_window_rank", "unbatched_forward"]


def unbatched_forward(forward: Callable[..., tuple[Any, Backward]], x: Array, *args: Any,
                      **kwargs: Any) -> tuple[Any, Backward]:
    """``forward(x[None], *args, **kwargs)`` with the batch axis removed from the output (or from
    each array of a tuple output, such as max pooling's ``(y, indices)``); its backward takes the
    unbatched output gradient and returns the unbatched input gradient.

    >>> import nnx, nnx.functional as F
    >>> y, back = unbatched_forward(F.max_pool2d_forward, nnx.asarray([[[1.0, 2.0], [4.0, 3.0]]]), 2)
    >>> tuple(y.shape), tuple(back(nnx.asarray([[[1.0]]]))[0].shape)
    ((1, 1, 1), (1, 2, 2))
    """
    xp = backends.backend_of(x).xp
    out, back = forward(xp.expand_dims(x, axis=0), *args, **kwargs)
    y = tuple(o[0, ...] for o in out) if isinstance(out, tuple) else out[0, ...]

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dx, grads = back(xp.expand_dims(dy, axis=0), input_grad)
        return (None if dx is None else dx[0, ...]), grads

    return y, backward


def check_window_rank(where: str, x: Array, spatial: int) -> None:
    """The input of an op over ``spatial`` trailing axes is batched ``(N, C, *spatial)`` or
    unbatched ``(C, *spatial)``; anything else is refused naming both layouts."""
    if x.ndim in (spatial + 1, spatial + 2):
        return
    dims = ("L",) if spatial == 1 else ("H", "W") if spatial == 2 else tuple(f"D{i}" for i in range(spatial))
    inner = ", ".join(dims)
    raise ValueError(f"{where}: expected {spatial + 1}-D (unbatched) or {spatial + 2}-D (batched) input of shape "
                     f"(C, {inner}) or (N, C, {inner}), got shape {tuple(x.shape)}")
