"""Dropout kernels, forward + backward: element-wise ``dropout`` and channel-wise ``dropout2d``.

Both are "inverted" dropout: while training, zero values with probability ``p`` and scale the
survivors by ``1/(1-p)`` so the expectation is unchanged; the identity otherwise. The mask comes
from :func:`dropout_mask` (the backend's random generator, on the input's device), shared by
every op that drops values (the recurrent layers' inter-layer dropout included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = [
    "dropout", "dropout_forward",
    "dropout2d", "dropout2d_forward",
    "dropout_mask",
]


def dropout_mask(like: Array, p: float, shape: tuple[int, ...] | None = None) -> Array:
    """An inverted-dropout scale mask: ``0`` with probability ``p``, else ``1/(1-p)``.

    ``like`` gives the backend, device and dtype; ``shape`` (default ``like.shape``) may have
    size-1 axes that broadcast against ``like`` (``(N, C, 1, 1)`` drops whole channels).
    ``p == 1`` gives all zeros. Multiply by it in the forward and again in the backward.

    >>> import nnx
    >>> x = nnx.asarray([[1.0, 1.0, 1.0]] * 2)
    >>> m = dropout_mask(x, 0.5)
    >>> sorted(set(float(v) for v in nnx.to_numpy(m).ravel()) - {0.0, 2.0})
    []
    """
    b = backends.backend_of(like)
    shape = tuple(like.shape) if shape is None else tuple(shape)
    if p >= 1.0:
        return b.xp.zeros(shape, dtype=like.dtype, device=b.device_of(like))
    mask = b.bernoulli(shape, 1.0 - p, like.dtype)
    mask *= 1.0 / (1.0 - p)
    return mask


def _identity_backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
    return dy, ()


def _masked(x: Array, mask: Array) -> tuple[Array, Backward]:
    """``x * mask`` and its backward ``dy * mask``."""

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy * mask, ()

    return x * mask, backward


def dropout_forward(x: Array, p: float = 0.5, training: bool = True) -> tuple[Array, Backward]:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``
    (``torch.nn.functional.dropout``). Identity when not training or when ``p == 0``.
    ``backward(dy)`` returns ``(dy * mask, ())``.

    >>> import nnx
    >>> y, back = dropout_forward(nnx.asarray([[1.0] * 5] * 4), 0.2)
    >>> tuple(y.shape), back(nnx.asarray([[1.0] * 5] * 4))[1]
    ((4, 5), ())
    """
    if not training or p == 0.0:
        return x, _identity_backward
    return _masked(x, dropout_mask(x, p))


def dropout(x: Array, p: float = 0.5, training: bool = True) -> Array:
    """Functional form of :func:`dropout_forward`."""
    return dropout_forward(x, p, training)[0]


def dropout2d_forward(x: Array, p: float = 0.5, training: bool = True) -> tuple[Array, Backward]:
    """Zero whole channels with probability ``p`` and scale the rest by ``1/(1-p)``
    (``torch.nn.functional.dropout2d``). ``x`` is ``(N, C, H, W)`` (or ``(N, C, L)``, treated
    channel-wise as PyTorch does); the mask has shape ``(N, C, 1, 1)``. Identity when not training.

    >>> import nnx
    >>> y, back = dropout2d_forward(nnx.asarray([[[[1.0] * 4] * 4] * 3] * 2), 1.0)
    >>> float(nnx.to_numpy(y).sum())
    0.0
    """
    if not training or p == 0.0:
        return x, _identity_backward
    return _masked(x, dropout_mask(x, p, tuple(x.shape[:2]) + (1,) * (x.ndim - 2)))


def dropout2d(x: Array, p: float = 0.5, training: bool = True) -> Array:
    """Functional form of :func:`dropout2d_forward`."""
    return dropout2d_forward(x, p, training)[0]
