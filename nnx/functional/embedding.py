"""The embedding kernel: look rows of a table up by integer ids, and scatter their gradients back.

Follows the functional convention of nnx: ``embedding_forward(...)`` returns ``(output,
backward)``; ``embedding(...)`` returns only the output (``torch.nn.functional.embedding``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

Array = Any
Backward = Callable[..., tuple]

__all__ = ["embedding", "embedding_forward", "embedding_renorm_"]


def embedding_renorm_(weight: Array, indices: Array, max_norm: float, norm_type: float = 2.0) -> Array:
    """Rescale the rows of ``weight`` named in ``indices`` whose norm exceeds ``max_norm``.

    As ``torch.embedding_renorm_``: such a row is multiplied by ``max_norm / (norm + 1e-7)``; other
    rows are untouched. Not differentiated (PyTorch does the same under ``no_grad``). Returns the
    updated table: ``weight`` itself, rescaled in place, on mutable libraries; a new array on
    immutable ones (store what it returns).

    >>> import nnx
    >>> w = nnx.asarray([[3.0, 4.0], [0.3, 0.4]])
    >>> _ = embedding_renorm_(w, nnx.asarray([0, 1]), max_norm=1.0)
    >>> [round(float(v), 4) for v in w[:, 0]]
    [0.6, 0.3]
    """
    b = backends.backend_of(weight)
    xp = b.xp
    n = weight.shape[0]
    flat = xp.reshape(indices, (-1,))
    ones = xp.ones((flat.shape[0], 1), dtype=weight.dtype, device=b.device_of(weight))
    counts = b.scatter_add(xp.zeros((n, 1), dtype=weight.dtype, device=b.device_of(weight)), flat, ones)
    if norm_type == 2.0:
        norms = xp.sqrt(xp.sum(weight * weight, axis=1, keepdims=True))
    elif norm_type == float("inf"):
        norms = xp.max(xp.abs(weight), axis=1, keepdims=True)
    else:
        norms = xp.sum(xp.abs(weight) ** norm_type, axis=1, keepdims=True) ** (1.0 / norm_type)
    rescale = (counts > 0.0) & (norms > max_norm)
    scale = xp.where(rescale, max_norm / (norms + 1e-7), xp.ones_like(norms))
    return b.at_set(weight, ..., weight * scale)


def embedding_forward(input: Array, weight: Array, padding_idx: int | None = None, max_norm: float | None = None,
                      norm_type: float = 2.0, scale_grad_by_freq: bool = False) -> tuple[Array, Backward]:
    """Look up rows of ``weight`` (``(num_embeddings, embedding_dim)``) for integer ``input`` of any shape.

    Output: ``input.shape + (embedding_dim,)``. ``backward(dy, input_grad=True)`` returns
    ``(None, (dweight,))``: the gradient of the table is a scatter-add of ``dy``'s rows (repeated
    ids sum), from the backend adapter's ``scatter_add``; row ``padding_idx`` gets none. With
    ``scale_grad_by_freq`` each row's gradient is divided by how often its id occurs in ``input``.
    With ``max_norm``, looked-up rows are renormalised first (in place, as PyTorch, on mutable
    libraries; on immutable ones call :func:`embedding_renorm_` yourself and keep its result).

    >>> import nnx
    >>> table = nnx.asarray([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]])
    >>> y, backward = embedding_forward(nnx.asarray([[1, 2, 1]]), table, padding_idx=0)
    >>> y.shape
    (1, 3, 2)
    >>> _, (dweight,) = backward(nnx.asarray([[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]]))
    >>> [float(v) for v in dweight[:, 0]]        # id 1 occurs twice
    [0.0, 2.0, 1.0]
    """
    b = backends.backend_of(weight)
    xp = b.xp
    if max_norm is not None:
        weight = embedding_renorm_(weight, input, float(max_norm), float(norm_type))
    shape = tuple(input.shape)
    flat = xp.reshape(input, (-1,))
    n, dim = weight.shape
    y = xp.reshape(xp.take(weight, flat, axis=0), shape + (dim,))
    if padding_idx is not None and padding_idx < 0:
        padding_idx += n

    def backward(dy: Array, input_grad: bool = True) -> tuple[None, tuple]:
        rows = xp.reshape(dy, (-1, dim))
        if scale_grad_by_freq:
            ones = xp.ones((flat.shape[0], 1), dtype=dy.dtype, device=b.device_of(dy))
            counts = b.scatter_add(xp.zeros((n, 1), dtype=dy.dtype, device=b.device_of(dy)), flat, ones)
            rows = rows / xp.take(counts, flat, axis=0)
        dweight = b.scatter_add(xp.zeros((n, dim), dtype=dy.dtype, device=b.device_of(dy)), flat, rows)
        if padding_idx is not None:
            dweight = b.at_set(dweight, (padding_idx, ...), 0.0)
        return None, (dweight,)

    return y, backward


def embedding(input: Array, weight: Array, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False) -> Array:
    """Functional form of :func:`embedding_forward` (``torch.nn.functional.embedding``).

    >>> import nnx
    >>> embedding(nnx.asarray([2]), nnx.asarray([[0.0], [1.0], [2.0]])).shape
    (1, 1)
    """
    return embedding_forward(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq)[0]
