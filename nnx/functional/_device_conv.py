"""Convolution shaped for GPUs: a fixed, small number of device operations per convolution.

Taken on backends whose arrays are not in host memory (see :mod:`._device`): CuPy, torch on
CUDA, and the launch meter's CuPy mode. Per convolution (whole batch at once):

* forward: ``im2col`` (the adapter's one gather, zero padding implicit: no padded copy of the
  input), one batched ``matmul`` with the weight, one bias add -- 3 operations;
* backward: ``im2col`` again (the closure holds the input, never the column matrix), the weight
  gradient as one batched ``matmul`` and one ``sum`` over the batch, the column gradient as one
  batched ``matmul``, ``col2im`` (the adapter's one scatter, cropped to the input), the bias
  gradient as one ``sum`` -- 6 operations.

The batch is cut into chunks only when one chunk's column matrix would exceed
``DEVICE_COLUMN_BYTES`` (a device-memory budget, not a cache size); every workload of
``benchmarks/launches.py`` fits in one chunk, so its launch count does not grow with the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._im2col import conv_cols_grad, conv_matmul, grouped
from ._validation import itemsize

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["DEVICE_COLUMN_BYTES", "conv2d_device", "device_chunks"]

#: Largest column matrix (bytes) a device-shaped convolution builds at once (a memory budget).
DEVICE_COLUMN_BYTES = 1 << 30


def device_chunks(xp: Any, n: int, column_elements_per_sample: int, dtype: Any) -> list[tuple[int, int]]:
    """Split a batch of ``n`` so that each chunk's column matrix stays under ``DEVICE_COLUMN_BYTES``.

    >>> import numpy as np
    >>> device_chunks(np, 512, 150 * 100, np.float32)
    [(0, 512)]
    """
    per_sample = max(1, column_elements_per_sample * itemsize(xp, dtype))
    chunk = max(1, min(n, DEVICE_COLUMN_BYTES // per_sample))
    return [(i, min(i + chunk, n)) for i in range(0, n, chunk)] or [(0, 0)]  # an empty batch: one empty chunk


def _weight_grad(xp: Any, dy: Array, cols: Array, groups: int, w_shape: tuple[int, ...]) -> Array:
    """``sum_n dy_n @ cols_n^T`` per group as ``(O, C/g, kh, kw)``: one batched ``matmul`` and one
    ``sum``, the result already in the weight's layout (no transposed copy)."""
    if groups == 1:
        return xp.reshape(xp.sum(xp.matmul(dy, xp.matrix_transpose(cols)), axis=0), w_shape)
    prod = xp.matmul(grouped(xp, dy, groups), xp.matrix_transpose(grouped(xp, cols, groups)))
    return xp.reshape(xp.sum(prod, axis=0), w_shape)


def conv2d_device(b: Any, x: Array, weight: Array, bias: Array | None, pads: tuple[int, int, int, int],
                  stride: tuple[int, int], dilation: tuple[int, int], groups: int,
                  out: tuple[int, int]) -> tuple[Array, Backward]:
    """2-D convolution (NCHW) in the device-shaped formulation of the module docstring.

    ``pads`` is (top, bottom, left, right) (bottom/right only shape ``out``, which is given);
    returns ``(y, backward)`` as :func:`nnx.functional.conv2d_forward`.
    """
    xp = b.xp
    n, c, h, w = x.shape
    o = weight.shape[0]
    kernel = (weight.shape[2], weight.shape[3])
    offsets = (pads[0], pads[2])
    length = out[0] * out[1]
    w_shape = tuple(weight.shape)
    chunks = device_chunks(xp, n, c * kernel[0] * kernel[1] * length, x.dtype)

    def columns(lo: int, hi: int) -> Array:
        part = x if (lo, hi) == (0, n) else x[lo:hi, ...]
        return b.im2col(part, kernel, stride, dilation, offsets, out)

    parts = [conv_matmul(xp, weight, columns(lo, hi), groups) for lo, hi in chunks]
    y = xp.reshape(parts[0] if len(parts) == 1 else xp.concat(parts, axis=0), (n, o, out[0], out[1]))
    del parts
    if bias is not None:
        y = y + xp.reshape(bias, (1, o, 1, 1))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dy3 = xp.reshape(dy, (n, o, length))
        dweight = None
        dx_parts = []
        for lo, hi in chunks:
            dyc = dy3 if (lo, hi) == (0, n) else dy3[lo:hi, ...]
            part = _weight_grad(xp, dyc, columns(lo, hi), groups, w_shape)
            dweight = part if dweight is None else dweight + part
            if input_grad:
                dcols = conv_cols_grad(xp, weight, dyc, groups)
                dx_parts.append(b.col2im(dcols, (hi - lo, c, h, w), kernel, stride, dilation, offsets, out))
                del dcols
        dbias = b.channel_sum(dy) if bias is not None else None
        dx = None
        if input_grad:
            dx = dx_parts[0] if len(dx_parts) == 1 else xp.concat(dx_parts, axis=0)
        return dx, (dweight, dbias)

    return y, backward
