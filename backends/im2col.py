"""Pure-standard references of the convolution gather/scatter kernels ``im2col`` and ``col2im``.

Both work on NCHW images with an implicit zero padding of ``top`` rows and ``left`` columns (the
bottom/right padding only decides the output size ``out``, which the caller gives):

* ``im2col(x)`` ``(N, C, H, W)`` -> ``(N, C*kh*kw, OH*OW)``, rows ordered ``(c, a, b)`` like a
  convolution weight ``(O, C, kh, kw)``, columns ``(i, j)``: entry ``x[n, c, i*sh + a*dh - top,
  j*sw + b*dw - left]``, ``fill`` (zero by default) outside the image.
* ``col2im(cols, shape)``: its adjoint, ``(N, C*kh*kw, OH*OW)`` -> ``(N, C, H, W)``, summing every
  column entry back onto the pixel it was read from.

The references pad explicitly and gather with the adapter's strided ``sliding_windows`` view (one
copy) or, without strided views, one strided slice per kernel offset, stacked; ``col2im`` adds one
strided slice per kernel offset (distinct positions within a slice, so no repeated-index scatter),
through ``at_add`` (in place on mutable libraries, a new array on immutable ones). Adapters replace
them by one kernel each (CuPy: ``cuda_kernels.ROW_KERNELS``; torch: ``unfold``/``fold``).
"""

from __future__ import annotations

from typing import Any

Array = Any
Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


def padded_size(shape: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int], pads: tuple[int, int], out: tuple[int, int]) -> tuple[int, int]:
    """Height and width of the zero-padded image that the ``out`` windows need (at least the image
    plus ``top``/``left``; more when the last window reaches past the image)."""
    hp = max(shape[2] + pads[0], (out[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1)
    wp = max(shape[3] + pads[1], (out[1] - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1)
    return hp, wp


def _taps(a: int, dil: int, stride: int, out: int) -> slice:
    start = a * dil
    return slice(start, start + stride * (out - 1) + 1, stride)


def im2col(b: Any, x: Array, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
           pads: tuple[int, int], out: tuple[int, int], fill: float = 0.0) -> Array:
    """``(N, C*kh*kw, OH*OW)`` windows of ``x`` (see the module docstring), pure standard; the
    padding reads as ``fill`` (``-inf`` for max pooling)."""
    xp = b.xp
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    hp, wp = padded_size(tuple(x.shape), kernel, stride, dilation, pads, out)
    top, left = pads
    if (hp, wp) != (h, w) or top or left:
        xpad = xp.full((n, c, hp, wp), fill, dtype=x.dtype, device=b.device_of(x))
        xpad = b.at_set(xpad, (slice(None), slice(None), slice(top, top + h), slice(left, left + w)), x)
    else:
        xpad = x
    windows = b.sliding_windows(xpad, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), (2, 3))
    if windows is not None:
        windows = windows[:, :, :sh * (oh - 1) + 1:sh, :sw * (ow - 1) + 1:sw, ::dh, ::dw]
        return xp.reshape(xp.permute_dims(windows, (0, 1, 4, 5, 2, 3)), (n, c * kh * kw, oh * ow))
    slices = [xpad[:, :, _taps(i, dh, sh, oh), _taps(j, dw, sw, ow)] for i in range(kh) for j in range(kw)]
    return xp.reshape(xp.stack(slices, axis=2), (n, c * kh * kw, oh * ow))


def col2im(b: Any, cols: Array, shape: tuple[int, int, int, int], kernel: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int], pads: tuple[int, int], out: tuple[int, int]) -> Array:
    """Adjoint of :func:`im2col`: ``cols`` ``(N, C*kh*kw, OH*OW)`` summed onto an ``shape`` image."""
    xp = b.xp
    n, c, h, w = shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    hp, wp = padded_size(shape, kernel, stride, dilation, pads, out)
    top, left = pads
    c6 = xp.reshape(cols, (n, c, kh, kw, oh, ow))
    dx = xp.zeros((n, c, hp, wp), dtype=cols.dtype, device=b.device_of(cols))
    for i in range(kh):
        for j in range(kw):
            dx = b.at_add(dx, (slice(None), slice(None), _taps(i, dh, sh, oh), _taps(j, dw, sw, ow)),
                          c6[:, :, i, j, :, :])
    if (hp, wp) == (h, w) and not (top or left):
        return dx
    return dx[:, :, top:top + h, left:left + w]
