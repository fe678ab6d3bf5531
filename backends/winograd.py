"""Winograd F(m x m, 3 x 3) tile transforms: the readable reference (pure standard) behind the
adapters' ``winograd_input_transform`` / ``winograd_output_transform`` / ``winograd_dy_transform``.

``nnx/functional/winograd.py`` holds the convolution built on them. With ``a = m + 2`` and the
fixed matrices ``B^T`` (a x a), ``G`` (a x 3), ``A^T`` (m x a) of Lavin & Gray (2016), one output
tile is ``Y = A^T [(G g G^T) * (B^T d B)] A``. The transformed tiles are laid out
``(a*a, channels, N * TH * TW)``, one plane per tile position, so that the core of a convolution is
one GEMM per tile position, ``(O x C) @ (C x N*TH*TW)``, with the whole batch in its long dimension.

Each transform is separable: a signed sum of strided slices along the rows, then along the columns
(the tiles overlap; nothing is gathered). The NumPy adapter runs F(2x2, 3x3) as host kernels
(``host_kernels.c``) with the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Array = Any

#: (B^T, G, A^T) per output tile size m.
TRANSFORMS: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    4: (
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    ),
}


def _lincomb(coefs: Sequence[float], parts: Sequence[Array]) -> Array:
    """``sum(c * p)`` over the non-zero coefficients, as few passes as possible (a new array,
    or one of ``parts`` itself when it is the only term with coefficient 1: read it only)."""
    terms = [(float(c), p) for c, p in zip(coefs, parts, strict=True) if c != 0]
    (c0, p0), rest = terms[0], terms[1:]
    if not rest:
        return p0 if c0 == 1.0 else p0 * c0
    c1, p1 = rest[0]
    first = p0 if c0 == 1.0 else p0 * c0
    if c1 == 1.0:
        acc = first + p1
    elif c1 == -1.0:
        acc = first - p1
    else:
        acc = first + p1 * c1
    for c, p in rest[1:]:
        if c == 1.0:
            acc += p
        elif c == -1.0:
            acc -= p
        else:
            acc += p * c
    return acc


def _zero_pad(b: Any, x: Array, top: int, bottom: int, left: int, right: int) -> Array:
    """``x`` (N, C, H, W) with zero rows/columns around it (concatenation: immutable libraries too)."""
    xp = b.xp
    n, c, h, w = x.shape
    dev = b.device_of(x)
    zeros = lambda shape: xp.zeros(shape, dtype=x.dtype, device=dev)  # noqa: E731
    if left or right:
        x = xp.concat([p for p in (zeros((n, c, h, left)) if left else None, x,
                                   zeros((n, c, h, right)) if right else None) if p is not None], axis=3)
    if top or bottom:
        wp = x.shape[3]
        x = xp.concat([p for p in (zeros((n, c, top, wp)) if top else None, x,
                                   zeros((n, c, bottom, wp)) if bottom else None) if p is not None], axis=2)
    return x


def _planes(xp: Any, tiles: list[Array], n: int, c: int, p: int) -> Array:
    """``a*a`` arrays ``(N, C, TH, TW)`` -> ``(a*a, C, N*P)``."""
    t = xp.reshape(xp.stack(tiles), (len(tiles), n, c, p))
    return xp.reshape(xp.permute_dims(t, (0, 2, 1, 3)), (len(tiles), c, n * p))


def input_transform(b: Any, x: Array, m: int, top: int, left: int, th: int, tw: int) -> Array:
    """``V = B^T d B`` of every ``(m+2) x (m+2)`` input tile of ``x`` ``(N, C, H, W)``, zero-padded by
    ``top``/``left`` and on the far sides up to whole tiles: ``(a*a, C, N*TH*TW)``."""
    xp = b.xp
    bt = TRANSFORMS[m][0]
    n, c, h, w = x.shape
    a = m + 2
    xpad = _zero_pad(b, x, top, max(0, m * th + 2 - h - top), left, max(0, m * tw + 2 - w - left))
    rows = [xpad[:, :, i:i + m * (th - 1) + 1:m, :] for i in range(a)]  # (N, C, TH, Wp) each
    tiles = []
    for r in range(a):
        row_r = _lincomb(bt[r], rows)
        cols = [row_r[:, :, :, j:j + m * (tw - 1) + 1:m] for j in range(a)]
        tiles.extend(_lincomb(bt[s], cols) for s in range(a))
    return _planes(xp, tiles, n, c, th * tw)


def output_transform(b: Any, mm: Array, m: int, n: int, th: int, tw: int, oh: int, ow: int) -> Array:
    """``A^T M A`` of ``mm`` ``(a*a, O, N*TH*TW)`` into ``(N, O, oh, ow)`` (tiles beyond the output cropped)."""
    xp = b.xp
    at = TRANSFORMS[m][2]
    a = m + 2
    o = mm.shape[1]
    m6 = xp.permute_dims(xp.reshape(mm, (a, a, o, n, th, tw)), (0, 1, 3, 2, 4, 5))  # (a, a, N, O, TH, TW)
    rows = []
    for p in range(m):
        z = _lincomb(at[p], [m6[r, ...] for r in range(a)])  # (a, N, O, TH, TW)
        rows.append(xp.stack([_lincomb(at[q], [z[s, ...] for s in range(a)]) for q in range(m)], axis=-1))
    y = xp.reshape(xp.stack(rows, axis=3), (n, o, th * m, tw * m))  # (N, O, TH, m, TW, m)
    return y if (th * m, tw * m) == (oh, ow) else y[:, :, :oh, :ow]


def dy_transform(b: Any, dy: Array, m: int, th: int, tw: int) -> Array:
    """The adjoint of :func:`output_transform`: ``A dY A^T`` per output tile of ``dy`` ``(N, O, oh, ow)``
    (zero beyond the output), ``(a*a, O, N*TH*TW)``."""
    xp = b.xp
    at = TRANSFORMS[m][2]
    a = m + 2
    n, o, oh, ow = dy.shape
    dyp = _zero_pad(b, dy, 0, m * th - oh, 0, m * tw - ow)
    rows = [dyp[:, :, p::m, :] for p in range(m)]  # (N, O, TH, m*TW)
    tiles = []
    for r in range(a):
        row_r = _lincomb([at[p][r] for p in range(m)], rows)
        cols = [row_r[:, :, :, q::m] for q in range(m)]
        tiles.extend(_lincomb([at[q][s] for q in range(m)], cols) for s in range(a))
    return _planes(xp, tiles, n, o, th * tw)


def filter_transform(b: Any, weight: Array, m: int, flip: bool = False) -> Array:
    """``U = G w G^T``: ``(a*a, O, C)``, one ``O x C`` matrix per tile position, of ``weight (O, C,
    3, 3)``; with ``flip``, of the input gradient's filter (``weight`` with ``O`` and ``C`` swapped
    and turned by 180 degrees): ``(a*a, C, O)``."""
    xp = b.xp
    if flip:
        weight = xp.flip(xp.permute_dims(weight, (1, 0, 2, 3)), axis=(2, 3))
    o, c = weight.shape[0], weight.shape[1]
    gm = xp.asarray(TRANSFORMS[m][1], dtype=weight.dtype, device=b.device_of(weight))
    a = gm.shape[0]
    gt = xp.matrix_transpose(gm)
    # two 2-d products, each one GEMM over all O*C filters:
    # t[o,c,k,j] = sum_l w[o,c,k,l] G[j,l], then u[o,c,j,i] = sum_k t[o,c,k,j] G[i,k]
    t = xp.reshape(b.matmul(xp.reshape(weight, (o * c * 3, 3)), gt), (o * c, 3, a))
    u = b.matmul(xp.reshape(xp.permute_dims(t, (0, 2, 1)), (o * c * a, 3)), gt)  # (O*C*a_j, a_i)
    return xp.reshape(xp.permute_dims(xp.reshape(u, (o, c, a, a)), (3, 2, 0, 1)), (a * a, o, c))


def filter_grad(b: Any, du: Array, m: int) -> Array:
    """The filter gradient ``dW = G^T dU G`` of ``du (a*a, O, C)``, the gradient of
    :func:`filter_transform`'s output: ``(O, C, 3, 3)``, as two 2-d products."""
    xp = b.xp
    gm = xp.asarray(TRANSFORMS[m][1], dtype=du.dtype, device=b.device_of(du))
    a, o, c = m + 2, du.shape[1], du.shape[2]
    # dW[o,c,k,l] = sum_ij G[i,k] du[i,j,o,c] G[j,l]
    du = xp.reshape(xp.reshape(du, (a, a, o, c)), (a, a * o * c))  # split, then merge (dask: two steps)
    t = xp.reshape(b.matmul(xp.matrix_transpose(gm), du), (3, a, o, c))
    t = xp.reshape(xp.permute_dims(t, (0, 2, 3, 1)), (3 * o * c, a))  # t[k, o, c, j]
    return xp.permute_dims(xp.reshape(b.matmul(t, gm), (3, o, c, 3)), (1, 2, 0, 3))
