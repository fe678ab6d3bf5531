"""Winograd convolution F(m x m, 3 x 3) for 3x3, stride-1, undilated, ungrouped convolutions (NCHW).

The output is cut into ``m x m`` tiles; each tile sees an ``a x a`` (``a = m + 2``) input tile.
With the small fixed matrices ``B^T`` (a x a), ``G`` (a x 3) and ``A^T`` (m x a) of Lavin & Gray
(2016), one output tile is ``Y = A^T [(G g G^T) * (B^T d B)] A``: the ``9 m^2`` multiplies of
direct convolution become ``a^2`` (2.25x fewer for F(2x2, 3x3), 4x fewer for F(4x4, 3x3)).

Written against the Array API standard only (every backend):

* **input transform** ``V = B^T d B``: separable, rows then columns, each output row/column a
  signed sum of strided slices of the padded input (the tiles overlap, nothing is gathered);
  stored as ``(a*a, N, C, TH*TW)`` (no transposition anywhere);
* **filter transform** ``U = G g G^T``: two small ``matmul`` s, ``(a*a, 1, O, C)``;
* **core**: one batched ``matmul`` ``U @ V`` -- one ``(O x C) @ (C x TH*TW)`` GEMM per tile
  position and sample;
* **output transform** ``A^T M A``: separable signed sums again, written into the output tiles.

Backward: the input gradient is itself a Winograd convolution, of ``dy`` with the flipped,
transposed filter (padding ``2 - p``); the filter gradient uses the adjoint transforms:
``dW = G^T [sum over tiles (A dY A^T) * (B^T d B)] G`` (one batched GEMM per tile position).

Accuracy (float32 against float64, relative max error; see ``tests/functional/test_winograd.py``
and docs/cpu_performance.md): F(2x2, 3x3) stays within a few float32 ulps of the im2col path;
F(4x4, 3x3) is several times worse (its transform has entries up to 8 and fractions 1/6, 1/24)
and is therefore only used when asked for (``MODE = "f4"``), never by the automatic rule.

When it is used (``MODE = "auto"``, the default): see :func:`applicable` and ``AUTO_MIN_CHANNELS``;
the rule was measured with ``benchmarks/bench_winograd.py`` on the NumPy backend, where the
im2col / flat-shift path won on every shape measured, so "auto" does not pick Winograd there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nnx_backends as backends

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["MODE", "applicable", "conv2d_winograd_forward", "TRANSFORMS"]

#: ``"auto"`` (the measured rule of :func:`applicable`), ``"off"`` (never: the im2col / flat-shift
#: path), ``"f2"`` / ``"f4"`` (always F(2x2,3x3) / F(4x4,3x3) where the shape allows it; tests).
MODE = "auto"

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

#: Automatic rule. Measured with benchmarks/bench_winograd.py (NumPy 2 + OpenBLAS, AVX-512, 1 and 2
#: threads; forward + both gradients; batch 4..64, 16..256 channels, 4x4..32x32 maps): F(2x2,3x3)
#: took 1.25x to 2.8x the time of the flat-shift im2col path on EVERY shape (F(4x4,3x3) 1.5x to
#: 3.5x): the transforms are ~20 strided elementwise passes that cost more than the GEMM saves
#: (64ch 32x32 batch 16: GEMM 12 ms -> 5 ms, transforms +14 ms). So the rule is "never" on NumPy:
#: ``AUTO_MIN_CHANNELS = None``. Set it (and ``AUTO_MIN_SIZE``) to let ``"auto"`` pick F(2x2,3x3)
#: for host-memory backends at or above those sizes, where a faster transform makes it pay.
AUTO_MIN_CHANNELS: int | None = None
#: Smallest output side (pixels) for the automatic rule when ``AUTO_MIN_CHANNELS`` is set.
AUTO_MIN_SIZE = 8


def applicable(b: Any, x: Array, weight: Array, stride: tuple[int, int], dilation: tuple[int, int],
               groups: int, pads: tuple[int, int, int, int]) -> int:
    """Output tile size ``m`` (2 or 4) the convolution should use, or 0 for the im2col path.

    Shape conditions (all modes): 3x3 kernel, stride 1, dilation 1, groups 1, every padding in
    ``0..2`` (the input gradient is then a Winograd convolution with padding ``2 - p``), a
    floating input. ``MODE == "auto"`` adds the measured rule: ``AUTO_MIN_CHANNELS`` set (it is
    None, "never", as measured on NumPy), a host-memory backend, at least that many input and
    output channels and an output at least ``AUTO_MIN_SIZE`` pixels per side; then F(2x2, 3x3).
    """
    if MODE == "off" or weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        return 0
    if stride != (1, 1) or dilation != (1, 1) or groups != 1 or any(p < 0 or p > 2 for p in pads):
        return 0
    if not b.xp.isdtype(x.dtype, "real floating"):
        return 0
    if MODE in ("f2", "f4"):
        return int(MODE[1])
    oh = x.shape[2] + pads[0] + pads[1] - 2
    ow = x.shape[3] + pads[2] + pads[3] - 2
    if AUTO_MIN_CHANNELS is None:
        return 0
    if (getattr(b, "host_memory", False) and min(x.shape[1], weight.shape[0]) >= AUTO_MIN_CHANNELS
            and min(oh, ow) >= AUTO_MIN_SIZE):
        return 2
    return 0


# ---------------------------------------------------------------------------- helpers
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


def _tiles(size: int, m: int) -> int:
    return -(-size // m)


def _input_transform(xp: Any, xpad: Array, bt: list[list[float]], m: int, th: int, tw: int) -> Array:
    """``V = B^T d B`` for every input tile of ``xpad`` ``(N, C, >= m*th+2, >= m*tw+2)``:
    ``(a*a, N, C, th*tw)`` ordered ``(r, s)`` x ``n`` x ``c`` x ``(tile row, tile col)``."""
    n, c = xpad.shape[0], xpad.shape[1]
    a = m + 2
    rows = [xpad[:, :, i:i + m * (th - 1) + 1:m, :] for i in range(a)]  # (N, C, th, Wp) each
    tiles = []  # stacked rather than written by index: immutable libraries (JAX) take the same code
    for r in range(a):
        row_r = _lincomb(bt[r], rows)
        cols = [row_r[:, :, :, j:j + m * (tw - 1) + 1:m] for j in range(a)]
        tiles.extend(_lincomb(bt[s], cols) for s in range(a))
    return xp.reshape(xp.stack(tiles), (a * a, n, c, th * tw))


def _filter_transform(xp: Any, weight: Array, g: list[list[float]]) -> Array:
    """``U = G w G^T``: ``(a*a, 1, O, C)`` (broadcast over the batch in the core matmul)."""
    o, c = weight.shape[0], weight.shape[1]
    gm = xp.asarray(g, dtype=weight.dtype, device=backends.backend_of(weight).device_of(weight))
    u = xp.matmul(xp.matmul(gm, weight), xp.matrix_transpose(gm))  # (O, C, a, a)
    a = gm.shape[0]
    return xp.reshape(xp.permute_dims(u, (2, 3, 0, 1)), (a * a, 1, o, c))


def _output_transform(xp: Any, mm: Array, at: list[list[float]], n: int, th: int, tw: int, device: Any) -> Array:
    """``A^T M A`` of ``mm`` ``(a*a, N, O, th*tw)`` into ``(N, O, m*th, m*tw)``."""
    m, a = len(at), len(at[0])
    o = mm.shape[2]
    m6 = xp.reshape(mm, (a, a, n, o, th, tw))
    rows = []
    for p in range(m):
        z = _lincomb(at[p], [m6[r, ...] for r in range(a)])  # (a, N, O, th, tw)
        rows.append(xp.stack([_lincomb(at[q], [z[s, ...] for s in range(a)]) for q in range(m)], axis=-1))
    y = xp.stack(rows, axis=3)  # (N, O, th, m, tw, m)
    return xp.reshape(y, (n, o, th * m, tw * m))


def _pad(xp: Any, x: Array, top: int, bottom: int, left: int, right: int, device: Any) -> Array:
    n, c, h, w = x.shape
    if top == bottom == left == right == 0:
        return x
    out = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype, device=device)
    return backends.backend_of(x).at_set(out, (slice(None), slice(None), slice(top, top + h), slice(left, left + w)), x)


def _forward_core(xp: Any, x: Array, u: Array, pads: tuple[int, int, int, int], m: int,
                  device: Any) -> tuple[Array, Array, tuple[int, int, int, int]]:
    """Convolution of ``x`` with the transformed filter ``u``; returns ``(y, xpad, (oh, ow, th, tw))``
    (``xpad`` padded up to whole tiles, for the filter gradient)."""
    n, _, h, w = x.shape
    oh, ow = h + pads[0] + pads[1] - 2, w + pads[2] + pads[3] - 2
    th, tw = _tiles(oh, m), _tiles(ow, m)
    xpad = _pad(xp, x, pads[0], pads[1] + m * th - oh, pads[2], pads[3] + m * tw - ow, device)
    bt, _, at = TRANSFORMS[m]
    mm = xp.matmul(u, _input_transform(xp, xpad, bt, m, th, tw))
    y = _output_transform(xp, mm, at, n, th, tw, device)
    if (m * th, m * tw) != (oh, ow):
        y = y[:, :, :oh, :ow]
    return y, xpad, (oh, ow, th, tw)


def _dy_transform(xp: Any, dy: Array, at: list[list[float]], th: int, tw: int, device: Any) -> Array:
    """Adjoint of the output transform: ``A dY A^T`` per tile, ``(a*a, N, O, th*tw)``."""
    m, a = len(at), len(at[0])
    n, o, oh, ow = dy.shape
    dyp = _pad(xp, dy, 0, m * th - oh, 0, m * tw - ow, device)
    rows = [dyp[:, :, p::m, :] for p in range(m)]  # (N, O, th, m*tw)
    tiles = []
    for r in range(a):
        row_r = _lincomb([at[p][r] for p in range(m)], rows)
        cols = [row_r[:, :, :, q::m] for q in range(m)]
        tiles.extend(_lincomb([at[q][s] for q in range(m)], cols) for s in range(a))
    return xp.reshape(xp.stack(tiles), (a * a, n, o, th * tw))


def conv2d_winograd_forward(x: Array, weight: Array, bias: Array | None, pads: tuple[int, int, int, int],
                            m: int = 2) -> tuple[Array, Backward]:
    """3x3 stride-1 convolution (``torch.nn.functional.conv2d`` with ``stride=1, dilation=1,
    groups=1``) by Winograd F(m x m, 3 x 3), ``m`` in (2, 4).

    Shapes: ``x`` ``(N, C, H, W)``, ``weight`` ``(O, C, 3, 3)``, ``bias`` ``(O,)`` or None,
    ``pads`` (top, bottom, left, right), each in 0..2. Returns ``(y, backward)`` with
    ``backward(dy, input_grad=True) -> (dx_or_None, (dweight, dbias))``, as
    :func:`nnx.functional.conv2d_forward` (which calls this where :func:`applicable` says so).

    >>> import nnx
    >>> x, w = nnx.asarray([[[[1.0] * 4] * 4]]), nnx.asarray([[[[1.0] * 3] * 3]])
    >>> y, back = conv2d_winograd_forward(x, w, None, (1, 1, 1, 1))
    >>> nnx.to_numpy(y)[0, 0, 0].tolist()
    [4.0, 6.0, 6.0, 4.0]
    """
    if m not in TRANSFORMS:
        raise ValueError(f"conv2d_winograd: output tile size must be one of {sorted(TRANSFORMS)}, got {m}")
    if tuple(weight.shape[2:]) != (3, 3) or any(p < 0 or p > 2 for p in pads):
        raise ValueError(f"conv2d_winograd: expected a (O, C, 3, 3) weight and paddings in 0..2, got weight "
                         f"shape {tuple(weight.shape)} and pads {tuple(pads)}")
    b = backends.backend_of(x)
    xp = b.xp
    device = b.device_of(x)
    _, g, at = TRANSFORMS[m]
    o = weight.shape[0]
    y, xpad, (oh, ow, th, tw) = _forward_core(xp, x, _filter_transform(xp, weight, g), pads, m, device)
    if bias is not None:
        y = y + xp.reshape(bias, (1, o, 1, 1))
    h, w_in = x.shape[2], x.shape[3]

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        bt, gl, atl = TRANSFORMS[m]
        dm = _dy_transform(xp, dy, atl, th, tw, device)                        # (a*a, N, O, P)
        v = _input_transform(xp, xpad, bt, m, th, tw)                           # (a*a, N, C, P)
        du = xp.sum(xp.matmul(dm, xp.matrix_transpose(v)), axis=1)              # (a*a, O, C)
        del v
        a = m + 2
        du4 = xp.permute_dims(xp.reshape(du, (a, a, o, du.shape[2])), (2, 3, 0, 1))  # (O, C, a, a)
        gm = xp.asarray(gl, dtype=dy.dtype, device=device)
        dweight = xp.matmul(xp.matmul(xp.matrix_transpose(gm), du4), gm)       # (O, C, 3, 3)
        dbias = xp.sum(dy, axis=(0, 2, 3)) if bias is not None else None
        dx = None
        if input_grad:
            wt = xp.flip(xp.permute_dims(weight, (1, 0, 2, 3)), axis=(2, 3))  # (C, O, 3, 3)
            back_pads = (2 - pads[0], 2 - pads[1], 2 - pads[2], 2 - pads[3])
            dx, _, _ = _forward_core(xp, dy, _filter_transform(xp, wt, g), back_pads, m, device)
            if tuple(dx.shape[2:]) != (h, w_in):  # only when oh was cropped ... never for pads in 0..2
                dx = dx[:, :, :h, :w_in]
        return dx, (dweight, dbias)

    return y, backward
