"""Winograd convolution F(m x m, 3 x 3) for 3x3, stride-1, undilated, ungrouped convolutions (NCHW).

The output is cut into ``m x m`` tiles; each tile sees an ``a x a`` (``a = m + 2``) input tile.
With the small fixed matrices ``B^T`` (a x a), ``G`` (a x 3) and ``A^T`` (m x a) of Lavin & Gray
(2016), one output tile is ``Y = A^T [(G g G^T) * (B^T d B)] A``: the ``9 m^2`` multiplies of
direct convolution become ``a^2`` (2.25x fewer for F(2x2, 3x3), 4x fewer for F(4x4, 3x3)).

* **input transform** ``V = B^T d B``: the adapter's ``winograd_input_transform``, laid out
  ``(a*a, C, N*TH*TW)`` (reference: separable signed sums of strided slices in
  ``backends/winograd.py``; NumPy: host kernels for F(2x2, 3x3) and F(4x4, 3x3));
* **filter transform** ``U = G g G^T``: two 2-d ``matmul`` s over all filters, ``(a*a, O, C)``;
* **core**: one ``matmul`` ``U @ V`` -- one ``(O x C) @ (C x N*TH*TW)`` GEMM per tile position,
  the whole batch in its long dimension (the adapter's ``matmul``: NumPy cuts the batch of
  products over nnx's threads);
* **output transform** ``A^T M A``: the adapter's ``winograd_output_transform``, into the output.

Backward: the input gradient is itself a Winograd convolution, of ``dy`` with the flipped,
transposed filter (padding ``2 - p``); the filter gradient uses the adjoint transforms:
``dW = G^T [sum over tiles (A dY A^T) * (B^T d B)] G`` (one batched GEMM per tile position).

Accuracy (float32 against float64, relative to the largest output; see
``tests/functional/test_winograd.py`` and docs/cpu_performance.md): F(2x2, 3x3) stays within a few
float32 ulps of the im2col path; F(4x4, 3x3) is about 10x worse (its transforms have entries up to
8 and fractions 1/6, 1/24): 3e-6 to 1.5e-5 max, 1e-6 to 3.3e-6 RMS at 16 to 512 channels.

When it is used (``MODE = "auto"``, the default): see :func:`applicable`, ``AUTO_TILE`` and
``AUTO_MIN_CHANNELS``; the rule was measured with ``benchmarks/bench_winograd.py`` on the NumPy
backend: with its host kernels, F(4x4, 3x3) wins on 32x32+ maps at every channel count tried and
on 16x16 maps from 128 channels, at 1 and 2 threads; with the reference transforms the im2col /
flat-shift path won on every shape, so other backends keep it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends
from nnx_backends import winograd as WG

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["AUTO_TILE", "MODE", "applicable", "conv2d_winograd_forward", "TRANSFORMS"]

#: ``"auto"`` (the measured rule of :func:`applicable`), ``"off"`` (never: the im2col / flat-shift
#: path), ``"f2"`` / ``"f4"`` (always F(2x2,3x3) / F(4x4,3x3) where the shape allows it; tests).
MODE = "auto"

#: (B^T, G, A^T) per output tile size m (defined beside the reference transforms).
TRANSFORMS = WG.TRANSFORMS

#: Automatic rule, for backends whose adapter runs the tile transforms as fused kernels
#: (``Backend.fast_winograd_tiles``: NumPy with its host kernels). Measured with
#: benchmarks/bench_winograd.py (NumPy 2 + OpenBLAS, AVX-512, 2 vCPUs; forward + both gradients,
#: float32, speed-up over the im2col / flat-shift path at 1 thread / 2 threads; 2026-11-28 23:55
#: UTC; the table is in docs/cpu_performance.md):
#:
#: * 32x32 and larger outputs: F(4x4, 3x3) wins at every channel count and batch tried -- 16 ch
#:   1.49 / 1.16, 32 ch 1.55 / 1.07, 64 ch 1.79 / 2.04, 128 ch 1.94 / 2.11, 64 ch 56x56 1.76 /
#:   2.02, batch 4 1.62 / 1.08 -- and beats F(2x2, 3x3) on all of them.
#: * 16x16: F(4x4) wins from 128 channels (1.44 / 1.38; 256 ch 1.32 / 1.24); at 64 channels it
#:   loses at 2 threads (1.23 / 0.88).
#: * 8x8 and smaller maps: slower at one of the two thread counts or both. 28x28 with 16 channels:
#:   level at one thread (0.94-1.04 over two runs), left to im2col.
#:
#: So F(4x4, 3x3) where both channel counts are at least ``AUTO_MIN_CHANNELS`` and the output at
#: least ``AUTO_MIN_SIZE`` per side, or at least ``AUTO_MIN_CHANNELS_MEDIUM`` channels and
#: ``AUTO_MIN_SIZE_MEDIUM`` per side. ``AUTO_MIN_CHANNELS = None`` turns the rule off.
AUTO_MIN_CHANNELS: int | None = 16
#: Smallest output side (pixels) for the rule at ``AUTO_MIN_CHANNELS``.
AUTO_MIN_SIZE = 32
#: Channels from which smaller outputs (down to ``AUTO_MIN_SIZE_MEDIUM``) take Winograd too.
AUTO_MIN_CHANNELS_MEDIUM = 128
AUTO_MIN_SIZE_MEDIUM = 16
#: Tile size of the automatic rule. F(4x4, 3x3)'s float32 error is about 10x the im2col path's
#: (relative to the largest output: 3e-6 to 1.5e-5 max, 1e-6 to 3.3e-6 RMS at 16 to 512 channels,
#: against 5e-7 / 4e-7 for im2col and F(2x2, 3x3); tests/functional/test_winograd.py bounds it),
#: still 30x finer than the TF32 convolutions PyTorch runs on recent GPUs by default. Set 2 for
#: F(2x2, 3x3)'s accuracy: then the rule of the F(2x2)-only releases, measured the same way
#: (0.85x the im2col time at 64 channels 32x32 batch 16): at least 64 channels and 32x32.
AUTO_TILE = 4


def applicable(b: Any, x: Array, weight: Array, stride: tuple[int, int], dilation: tuple[int, int],
               groups: int, pads: tuple[int, int, int, int]) -> int:
    """Output tile size ``m`` (2 or 4) the convolution should use, or 0 for the im2col path.

    Shape conditions (all modes): 3x3 kernel, stride 1, dilation 1, groups 1, every padding in
    ``0..2`` (the input gradient is then a Winograd convolution with padding ``2 - p``), a
    floating input. ``MODE == "auto"`` adds the measured rule: an adapter with fused transforms
    for ``AUTO_TILE`` (``b.fast_winograd_tiles()``) and the channel and size thresholds above.
    """
    if MODE == "off" or weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        return 0
    if stride != (1, 1) or dilation != (1, 1) or groups != 1 or any(p < 0 or p > 2 for p in pads):
        return 0
    if not b.xp.isdtype(x.dtype, "real floating"):
        return 0
    if MODE in ("f2", "f4"):
        return int(MODE[1])
    if AUTO_MIN_CHANNELS is None or AUTO_TILE not in b.fast_winograd_tiles():
        return 0
    side = min(x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3]) - 2
    channels = min(x.shape[1], weight.shape[0])
    if AUTO_TILE == 2:  # the F(2x2)-only rule
        return 2 if channels >= 64 and side >= 32 else 0
    if (channels >= AUTO_MIN_CHANNELS and side >= AUTO_MIN_SIZE) or (
            channels >= AUTO_MIN_CHANNELS_MEDIUM and side >= AUTO_MIN_SIZE_MEDIUM):
        return AUTO_TILE
    return 0


# ---------------------------------------------------------------------------- helpers
def _tiles(size: int, m: int) -> int:
    return -(-size // m)


def _forward_core(b: Any, x: Array, u: Array, pads: tuple[int, int, int, int], m: int) -> tuple[Array, tuple]:
    """Convolution of ``x`` with the transformed filter ``u``: the adapter's ``winograd_conv``
    (input transform, one GEMM per tile position with the whole batch in its long dimension, the
    output transform). Returns ``(y, (oh, ow, th, tw))``."""
    _, _, h, w = x.shape
    oh, ow = h + pads[0] + pads[1] - 2, w + pads[2] + pads[3] - 2
    th, tw = _tiles(oh, m), _tiles(ow, m)
    return b.winograd_conv(x, u, m, pads[0], pads[2], th, tw, oh, ow), (oh, ow, th, tw)


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
    o = weight.shape[0]
    y, (oh, ow, th, tw) = _forward_core(b, x, b.winograd_filter_transform(weight, m), pads, m)
    if bias is not None:
        y = y + xp.reshape(bias, (1, o, 1, 1))
    h, w_in = x.shape[2], x.shape[3]

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dm = b.winograd_dy_transform(dy, m, th, tw)                       # (a*a, O, N*P)
        v = b.winograd_input_transform(x, m, pads[0], pads[2], th, tw)    # (a*a, C, N*P), recomputed
        du = b.matmul(dm, xp.matrix_transpose(v))                        # (a*a, O, C): one GEMM per position
        del v, dm
        dweight = b.winograd_filter_grad(du, m)                           # (O, C, 3, 3)
        dbias = b.channel_sum(dy) if bias is not None else None
        dx = None
        if input_grad:
            back_pads = (2 - pads[0], 2 - pads[1], 2 - pads[2], 2 - pads[3])  # the flipped filter, (C, O)
            dx, _ = _forward_core(b, dy, b.winograd_filter_transform(weight, m, flip=True), back_pads, m)
            if tuple(dx.shape[2:]) != (h, w_in):  # never for pads in 0..2; kept as a guard
                dx = dx[:, :, :h, :w_in]
        return dx, (dweight, dbias)

    return y, backward
