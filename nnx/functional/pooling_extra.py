"""More pooling kernels, forward + backward, built on the 2-D ones of :mod:`.pooling`:
max_pool1d, avg_pool1d, adaptive_avg_pool1d, adaptive_max_pool2d, max_pool3d, avg_pool3d.

* A **1-D pool** is the 2-D pool of the ``(N, C, 1, L)`` view of its input (a free reshape), so it
  takes the same paths (the device-shaped one on GPUs, ``at_set``/``at_add`` writes on immutable
  libraries).
* A **3-D pool** is separable: the 2-D pool over ``(H, W)`` of the ``(N, C*D, H, W)`` view, then
  a 2-D pool with a ``(kd, 1)`` window over the ``(N, C, D, OH*OW)`` view. For max pooling this
  keeps PyTorch's choice of the first maximum in ``(d, h, w)`` order (the first depth that holds the
  maximum, then its first position); average pooling's divisor is the product of the per-axis
  counts, as PyTorch's (``divisor_override``: the two stages sum, the second divides).
* **Adaptive max pooling** takes PyTorch's windows ``[floor(i*H/OH), ceil((i+1)*H/OH))``; where
  they tile the input it is ``max_pool2d`` with ``kernel = stride = H/OH``, otherwise it is
  separable (the maximum over each column window, then over each row window) and its backward
  routes the gradient with equality masks, first maximum wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from ._validation import ntuple, rank_error
from ._windows import output_sizes
from .pooling import (
    _split_to_first_max,
    adaptive_avg_pool2d_forward,
    adaptive_output_size,
    avg_pool2d_forward,
    check_divisor_override,
    max_pool2d_forward,
)

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = [
    "adaptive_avg_pool1d", "adaptive_avg_pool1d_forward",
    "adaptive_max_pool2d", "adaptive_max_pool2d_forward",
    "avg_pool1d", "avg_pool1d_forward",
    "avg_pool3d", "avg_pool3d_forward",
    "max_pool1d", "max_pool1d_forward",
    "max_pool3d", "max_pool3d_forward",
]


def pool_arguments_nd(where: str, n: int, kernel_size: Any, stride: Any = None, padding: Any = 0,
                      dilation: Any = 1) -> tuple[tuple[int, ...], ...]:
    """Validated ``(kernel_size, stride, padding, dilation)`` ``n``-tuples of a pooling window
    (``stride`` defaults to ``kernel_size``; padding at most half the kernel, as PyTorch).

    >>> pool_arguments_nd("max_pool1d", 1, 3, padding=1)
    ((3,), (3,), (1,), (1,))
    """
    k = ntuple(where, "kernel_size", kernel_size, n)
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    s = k if no_stride else ntuple(where, "stride", stride, n)
    p = ntuple(where, "padding", padding, n, allow_zero=True)
    d = ntuple(where, "dilation", dilation, n)
    if any(2 * pp > kk for pp, kk in zip(p, k, strict=True)):
        raise ValueError(f"{where}: padding should be at most half of the kernel size, got padding={p}, "
                         f"kernel_size={k}")
    return k, s, p, d


def _check_fits(where: str, x: Array, ndim: int, layout: str, k: tuple[int, ...], s: tuple[int, ...],
                p: tuple[int, ...], d: tuple[int, ...], ceil_mode: bool) -> None:
    """Rank of ``x`` and that the window fits its padded spatial axes (errors in the op's own terms)."""
    if x.ndim != ndim:
        raise rank_error(where, x, (ndim,), layout)
    output_sizes(where, x, k, s, tuple(2 * v for v in p), d, ceil_mode)


def _through(xp: Any, x: Array, view: tuple[int, ...], op: Callable[[Array], tuple[Array, Backward]],
             out_shape: Callable[[Array], tuple[int, ...]]) -> tuple[Array, Backward]:
    """``op`` applied to the ``view``-shaped reshape of ``x``; its output reshaped by ``out_shape``
    and its backward reshaped back."""
    shape = tuple(x.shape)
    y4, back4 = op(xp.reshape(x, view))
    y4_shape = tuple(y4.shape)
    y = xp.reshape(y4, out_shape(y4))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        dx4, _ = back4(xp.reshape(dy, y4_shape))
        return xp.reshape(dx4, shape), ()

    return y, backward


def max_pool1d_forward(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                       ceil_mode: bool = False, *, where: str = "max_pool1d") -> tuple[Array, Backward]:
    """1-D max pooling (``torch.nn.functional.max_pool1d``) of ``(N, C, L)``; gradient to the first maximum.

    >>> import nnx
    >>> y, back = max_pool1d_forward(nnx.asarray([[[1.0, 3.0, 2.0, 0.0]]]), 2)
    >>> nnx.to_numpy(y).tolist()
    [[[3.0, 2.0]]]
    """
    k, s, p, d = pool_arguments_nd(where, 1, kernel_size, stride, padding, dilation)
    _check_fits(where, x, 3, "(N, C, L)", k, s, p, d, ceil_mode)
    n, c, length = x.shape
    return _through(backends.backend_of(x).xp, x, (n, c, 1, length),
                    lambda v: max_pool2d_forward(v, (1, k[0]), (1, s[0]), (0, p[0]), (1, d[0]), ceil_mode,
                                                 where=where),
                    lambda y4: (n, c, y4.shape[3]))


def max_pool1d(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> Array:
    """Functional form of :func:`max_pool1d_forward`."""
    return max_pool1d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def avg_pool1d_forward(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True, *, where: str = "avg_pool1d") -> tuple[Array, Backward]:
    """1-D average pooling (``torch.nn.functional.avg_pool1d``) of ``(N, C, L)``.

    >>> import nnx
    >>> y, back = avg_pool1d_forward(nnx.asarray([[[1.0, 3.0, 2.0, 0.0]]]), 2)
    >>> nnx.to_numpy(y).tolist()
    [[[2.0, 1.0]]]
    """
    k, s, p, _ = pool_arguments_nd(where, 1, kernel_size, stride, padding)
    _check_fits(where, x, 3, "(N, C, L)", k, s, p, (1,), ceil_mode)
    n, c, length = x.shape
    return _through(backends.backend_of(x).xp, x, (n, c, 1, length),
                    lambda v: avg_pool2d_forward(v, (1, k[0]), (1, s[0]), (0, p[0]), ceil_mode, count_include_pad,
                                                 where=where),
                    lambda y4: (n, c, y4.shape[3]))


def avg_pool1d(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Array:
    """Functional form of :func:`avg_pool1d_forward`."""
    return avg_pool1d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad)[0]


def adaptive_output_size_1d(where: str, output_size: Any) -> int:
    """Validated ``output_size`` of a 1-D adaptive pooling: a positive int (or a 1-tuple of one).

    >>> adaptive_output_size_1d("adaptive_avg_pool1d", (3,))
    3
    """
    (size,) = ntuple(where, "output_size", output_size, 1)
    return size


def adaptive_avg_pool1d_forward(x: Array, output_size: Any, *,
                                where: str = "adaptive_avg_pool1d") -> tuple[Array, Backward]:
    """Adaptive 1-D average pooling (``torch.nn.functional.adaptive_avg_pool1d``) of ``(N, C, L)``.

    >>> import nnx
    >>> y, back = adaptive_avg_pool1d_forward(nnx.asarray([[[1.0, 3.0, 2.0]]]), 2)
    >>> nnx.to_numpy(y).tolist()
    [[[2.0, 2.5]]]
    """
    size = adaptive_output_size_1d(where, output_size)
    if x.ndim != 3:
        raise rank_error(where, x, (3,), "(N, C, L)")
    n, c, length = x.shape
    return _through(backends.backend_of(x).xp, x, (n, c, 1, length),
                    lambda v: adaptive_avg_pool2d_forward(v, (1, size), where=where), lambda y4: (n, c, size))


def adaptive_avg_pool1d(x: Array, output_size: Any) -> Array:
    """Functional form of :func:`adaptive_avg_pool1d_forward`."""
    return adaptive_avg_pool1d_forward(x, output_size)[0]


def _adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive windows ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_max_axis(b: Any, x: Array, axis: int, windows: list[tuple[int, int]]) -> tuple[Array, Backward]:
    """Maximum over each window of ``axis`` (2 or 3) of ``x``; backward routes each window's
    gradient to its first maximum (equality masks, summed where windows overlap)."""
    xp = b.xp

    def along(lo: int, hi: int) -> tuple:
        return (slice(None),) * axis + (slice(lo, hi), ...)

    y = xp.concat([xp.max(x[along(lo, hi)], axis=axis, keepdims=True) for lo, hi in windows], axis=axis)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        dx = xp.zeros(x.shape, dtype=dy.dtype, device=b.device_of(dy))
        for i, (lo, hi) in enumerate(windows):
            taps = [x[along(t, t + 1)] for t in range(lo, hi)]
            parts = _split_to_first_max(xp, dy[along(i, i + 1)], taps, y[along(i, i + 1)], dy.dtype)
            for t, part in zip(range(lo, hi), parts, strict=True):
                dx = b.at_add(dx, along(t, t + 1), part)
        return dx, ()

    return y, backward


def adaptive_max_pool2d_forward(x: Array, output_size: Any, *,
                                where: str = "adaptive_max_pool2d") -> tuple[Array, Backward]:
    """Adaptive 2-D max pooling (``torch.nn.functional.adaptive_max_pool2d``, without indices), NCHW.

    ``output_size`` is an int or a pair (``None`` keeps that input size). The gradient goes to
    the first maximum of each window in row-major order, as PyTorch.

    >>> import nnx
    >>> y, back = adaptive_max_pool2d_forward(nnx.asarray([[[[1.0, 2.0, 0.0], [4.0, 3.0, 5.0]]]]), (1, 2))
    >>> nnx.to_numpy(y).tolist()
    [[[[4.0, 5.0]]]]
    """
    b = backends.backend_of(x)
    sizes = adaptive_output_size(where, output_size)
    if x.ndim != 4:
        raise rank_error(where, x, (4,), "(N, C, H, W)")
    h, w = x.shape[2], x.shape[3]
    oh, ow = (h if sizes[0] is None else sizes[0]), (w if sizes[1] is None else sizes[1])
    if h % oh == 0 and w % ow == 0:  # the windows tile the input: a plain max pooling
        return max_pool2d_forward(x, (h // oh, w // ow), where=where)
    m1, back_w = _adaptive_max_axis(b, x, 3, _adaptive_windows(w, ow))
    y, back_h = _adaptive_max_axis(b, m1, 2, _adaptive_windows(h, oh))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return back_w(back_h(dy)[0])[0], ()

    return y, backward


def adaptive_max_pool2d(x: Array, output_size: Any) -> Array:
    """Functional form of :func:`adaptive_max_pool2d_forward`."""
    return adaptive_max_pool2d_forward(x, output_size)[0]


def _pool3d(x: Array, where: str, first: Callable[[Array], tuple[Array, Backward]],
            second: Callable[[Array], tuple[Array, Backward]]) -> tuple[Array, Backward]:
    """The separable 3-D pool: ``first`` over (H, W) of the ``(N, C*D, H, W)`` view, ``second``
    over D of the ``(N, C, D, OH*OW)`` view."""
    xp = backends.backend_of(x).xp
    n, c, d, h, w = x.shape
    y1, back1 = first(xp.reshape(x, (n, c * d, h, w)))
    oh, ow = y1.shape[2], y1.shape[3]
    y2, back2 = second(xp.reshape(y1, (n, c, d, oh * ow)))
    od = y2.shape[2]
    y = xp.reshape(y2, (n, c, od, oh, ow))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        dy1, _ = back2(xp.reshape(dy, (n, c, od, oh * ow)))
        dx, _ = back1(xp.reshape(dy1, (n, c * d, oh, ow)))
        return xp.reshape(dx, (n, c, d, h, w)), ()

    return y, backward


def max_pool3d_forward(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                       ceil_mode: bool = False, *, where: str = "max_pool3d") -> tuple[Array, Backward]:
    """3-D max pooling (``torch.nn.functional.max_pool3d``) of ``(N, C, D, H, W)``; gradient to the
    first maximum in ``(d, h, w)`` order, as PyTorch.

    >>> import nnx
    >>> y, back = max_pool3d_forward(nnx.asarray([[[[[1.0, 2.0]], [[4.0, 3.0]]]]]), (2, 1, 2))
    >>> nnx.to_numpy(y).tolist()
    [[[[[4.0]]]]]
    """
    k, s, p, d = pool_arguments_nd(where, 3, kernel_size, stride, padding, dilation)
    _check_fits(where, x, 5, "(N, C, D, H, W)", k, s, p, d, ceil_mode)
    return _pool3d(x, where,
                   lambda v: max_pool2d_forward(v, k[1:], s[1:], p[1:], d[1:], ceil_mode, where=where),
                   lambda v: max_pool2d_forward(v, (k[0], 1), (s[0], 1), (p[0], 0), (d[0], 1), ceil_mode,
                                                where=where))


def max_pool3d(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> Array:
    """Functional form of :func:`max_pool3d_forward`."""
    return max_pool3d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def avg_pool3d_forward(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True, divisor_override: int | None = None, *,
                       where: str = "avg_pool3d") -> tuple[Array, Backward]:
    """3-D average pooling (``torch.nn.functional.avg_pool3d``) of ``(N, C, D, H, W)``.

    >>> import nnx
    >>> y, back = avg_pool3d_forward(nnx.asarray([[[[[1.0, 2.0]], [[4.0, 3.0]]]]]), (2, 1, 2))
    >>> nnx.to_numpy(y).tolist()
    [[[[[2.5]]]]]
    """
    k, s, p, _ = pool_arguments_nd(where, 3, kernel_size, stride, padding)
    check_divisor_override(where, divisor_override)
    _check_fits(where, x, 5, "(N, C, D, H, W)", k, s, p, (1, 1, 1), ceil_mode)
    first_div, second_div = (None, None) if divisor_override is None else (1, divisor_override)
    return _pool3d(x, where,
                   lambda v: avg_pool2d_forward(v, k[1:], s[1:], p[1:], ceil_mode, count_include_pad, first_div,
                                                where=where),
                   lambda v: avg_pool2d_forward(v, (k[0], 1), (s[0], 1), (p[0], 0), ceil_mode, count_include_pad,
                                                second_div, where=where))


def avg_pool3d(x: Array, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Array:
    """Functional form of :func:`avg_pool3d_forward`."""
    return avg_pool3d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)[0]
