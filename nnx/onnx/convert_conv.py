"""ONNX converters of the convolutions, pools and resampling layers (NCHW, as ONNX)."""

from __future__ import annotations

from typing import Any

from ..layers import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose2d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    PixelShuffle,
    PixelUnshuffle,
    Upsample,
)
from .builder import GraphBuilder, UnsupportedLayerError, register_converter


def _pads(padding: Any, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) of a PyTorch padding (ints, 'valid' or 'same')."""
    if padding == "valid":
        return [0] * (2 * len(kernel))
    if padding == "same":  # PyTorch puts the odd extra pixel at the end
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    return [int(p) for p in padding] * 2


def _check_padding_mode(module: Any) -> None:
    mode = getattr(module, "padding_mode", "zeros")
    if mode != "zeros":
        raise UnsupportedLayerError(f"nnx.onnx.export: {type(module).__name__} with padding_mode={mode!r} is not "
                                    "supported yet (only 'zeros')")


def _circular_pad(g: GraphBuilder, x: str, begins: list[int], ends: list[int]) -> str:
    """Wrap-around padding of the spatial axes (``Slice`` + ``Concat``; ``Pad``'s "wrap" needs opset 19)."""
    shape = g.shape(x)
    for i, (b, e) in enumerate(zip(begins, ends, strict=True)):
        axis, size = i + 2, shape[i + 2]
        parts = []
        if b:
            parts.append(g.node("Slice", [x, g.ints([size - b]), g.ints([size]), g.ints([axis])]))
        parts.append(x)
        if e:
            parts.append(g.node("Slice", [x, g.ints([0]), g.ints([e]), g.ints([axis])]))
        if len(parts) > 1:
            x = g.node("Concat", parts, axis=axis)
    return x


def _padded_input(g: GraphBuilder, module: Any, x: str) -> tuple[str, list[int]]:
    """The input and the Conv ``pads``: with a non-zero ``padding_mode`` the input is padded first
    (``Pad`` reflect/edge, or wrap-around slices for "circular") and the Conv pads are 0."""
    pads = _pads(module.padding, module.kernel_size, module.dilation)
    mode = getattr(module, "padding_mode", "zeros")
    if mode == "zeros" or not any(pads):
        return x, pads
    n = len(module.kernel_size)
    begins, ends = pads[:n], pads[n:]
    if mode == "circular":
        x = _circular_pad(g, x, begins, ends)
    else:
        onnx_mode = {"reflect": "reflect", "replicate": "edge"}[mode]
        x = g.node("Pad", [x, g.ints([0, 0] + begins + [0, 0] + ends, hint="pads")], mode=onnx_mode)
    return x, [0] * (2 * n)


@register_converter(Conv1d, Conv2d, Conv3d)
def conv(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """``Conv`` (1-, 2- or 3-D kernels) with strides, pads, dilations, groups and any ``padding_mode``."""
    x, pads = _padded_input(g, module, inputs[0])
    args = [x, g.param(module, "weight")] + ([g.param(module, "bias")] if module.bias is not None else [])
    return g.node("Conv", args, kernel_shape=list(module.kernel_size), strides=list(module.stride),
                  dilations=list(module.dilation), group=int(module.groups), pads=pads)


@register_converter(ConvTranspose2d)
def conv_transpose(g: GraphBuilder, module: ConvTranspose2d, inputs: list[str]) -> str:
    """``ConvTranspose`` (the weight layout ``(in, out/groups, kh, kw)`` is ONNX's too)."""
    _check_padding_mode(module)
    args = [inputs[0], g.param(module, "weight")] + ([g.param(module, "bias")] if module.bias is not None else [])
    return g.node("ConvTranspose", args, kernel_shape=list(module.kernel_size), strides=list(module.stride),
                  dilations=list(module.dilation), group=int(module.groups),
                  pads=_pads(module.padding, module.kernel_size, module.dilation),
                  output_padding=list(module.output_padding))


def _spatial(value: Any, n: int) -> list[int]:
    """An int or a tuple of a pooling argument as a list of ``n`` ints."""
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * n


def _pool_dims(module: Any) -> int:
    """The number of spatial axes of a pooling layer (its input is ``(N, C, *spatial)``)."""
    if isinstance(module, (MaxPool1d, AvgPool1d, AdaptiveAvgPool1d)):
        return 1
    return 3 if isinstance(module, (MaxPool3d, AvgPool3d)) else 2


@register_converter(MaxPool1d, MaxPool2d, MaxPool3d)
def max_pool(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """``MaxPool`` (1-, 2- or 3-D; implicit -inf padding, dilation and ceil_mode as PyTorch)."""
    n = _pool_dims(module)
    return g.node("MaxPool", inputs[:1], kernel_shape=_spatial(module.kernel_size, n),
                  strides=_spatial(module.stride, n), pads=_spatial(module.padding, n) * 2,
                  dilations=_spatial(module.dilation, n), ceil_mode=int(module.ceil_mode))


@register_converter(AvgPool1d, AvgPool2d, AvgPool3d)
def avg_pool(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """``AveragePool`` (1-, 2- or 3-D); a ``divisor_override`` becomes a scale of the window sum."""
    n = _pool_dims(module)
    kernel, padding = _spatial(module.kernel_size, n), _spatial(module.padding, n)
    divisor = getattr(module, "divisor_override", None)
    if divisor is not None and (module.ceil_mode or any(padding) and not module.count_include_pad):
        raise UnsupportedLayerError(f"nnx.onnx.export: {type(module).__name__} with divisor_override and ceil_mode "
                                    "(or count_include_pad=False with padding) is not supported")
    count_pad = 1 if divisor is not None else int(module.count_include_pad)
    y = g.node("AveragePool", inputs[:1], kernel_shape=kernel, strides=_spatial(module.stride, n),
               pads=padding * 2, ceil_mode=int(module.ceil_mode), count_include_pad=count_pad)
    if divisor is not None:
        volume = 1
        for k in kernel:
            volume *= k
        y = g.node("Mul", [y, g.const(volume / divisor, like=y)])
    return y


def _reduce(g: GraphBuilder, op: str, x: str, axis: int) -> str:
    """``ReduceMean``/``ReduceMax`` over one axis, keeping it (axes became an input in opset 18)."""
    if g.opset_version >= 18:
        return g.node(op, [x, g.ints([axis], hint="axes")], keepdims=1)
    return g.node(op, [x], axes=[axis], keepdims=1)


def _adaptive_axis(g: GraphBuilder, op: str, x: str, axis: int, size: int, out: int) -> str:
    """PyTorch's adaptive windows along one axis, ``[floor(i*size/out), ceil((i+1)*size/out))``.

    Windows of one size that tile the axis are one strided pool; otherwise every window is a
    ``Slice`` + reduction, and the ``out`` results are concatenated (static, from the traced size).
    """
    if out == size:
        return x
    pieces = []
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        piece = g.node("Slice", [x, g.ints([start]), g.ints([end]), g.ints([axis], hint="axes")])
        pieces.append(_reduce(g, op, piece, axis))
    return pieces[0] if out == 1 else g.node("Concat", pieces, axis=axis)


def _adaptive(g: GraphBuilder, module: Any, x: str, n: int, op: str) -> str:
    """Adaptive pooling of the last ``n`` axes; separable, as a window is a product of intervals."""
    size = module.output_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (size,) * n
    spatial = g.shape(x)[-n:]
    out = tuple(i if o is None else int(o) for o, i in zip(size, spatial, strict=True))
    if out == (1,) * n:
        return g.node("GlobalAveragePool" if op == "ReduceMean" else "GlobalMaxPool", [x])
    if all(s % o == 0 for s, o in zip(spatial, out, strict=True)):  # equal non-overlapping windows: one pool
        kernel = [s // o for s, o in zip(spatial, out, strict=True)]
        pool = "AveragePool" if op == "ReduceMean" else "MaxPool"
        return g.node(pool, [x], kernel_shape=kernel, strides=kernel)
    for k in range(n):  # (N, C, *spatial): layers take batched inputs only
        x = _adaptive_axis(g, op, x, 2 + k, spatial[k], out[k])
    return x


@register_converter(AdaptiveAvgPool1d)
def adaptive_avg_pool_1d(g: GraphBuilder, module: AdaptiveAvgPool1d, inputs: list[str]) -> str:
    """``GlobalAveragePool`` for output 1, a strided ``AveragePool`` when the size divides the input,
    otherwise PyTorch's (overlapping) windows as ``Slice`` + ``ReduceMean`` + ``Concat``."""
    return _adaptive(g, module, inputs[0], 1, "ReduceMean")


@register_converter(AdaptiveAvgPool2d)
def adaptive_avg_pool(g: GraphBuilder, module: AdaptiveAvgPool2d, inputs: list[str]) -> str:
    """``GlobalAveragePool`` for output 1x1, a strided ``AveragePool`` when the sizes divide the input,
    otherwise PyTorch's (overlapping) windows as ``Slice`` + ``ReduceMean`` + ``Concat`` per axis."""
    return _adaptive(g, module, inputs[0], 2, "ReduceMean")


@register_converter(AdaptiveMaxPool2d)
def adaptive_max_pool_2d(g: GraphBuilder, module: AdaptiveMaxPool2d, inputs: list[str]) -> str:
    """``GlobalMaxPool`` for output 1x1, a strided ``MaxPool`` when the sizes divide the input,
    otherwise PyTorch's (overlapping) windows as ``Slice`` + ``ReduceMax`` + ``Concat`` per axis."""
    return _adaptive(g, module, inputs[0], 2, "ReduceMax")


@register_converter(Upsample)
def upsample(g: GraphBuilder, module: Upsample, inputs: list[str]) -> str:
    """``Resize``: nearest (floor, asymmetric) or (bi)linear with PyTorch's corner convention."""
    x = inputs[0]
    rank = g.rank(x)
    if module.mode == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    elif module.mode in ("linear", "bilinear"):
        ctm = "align_corners" if module.align_corners else "pytorch_half_pixel"
        attrs = {"mode": "linear", "coordinate_transformation_mode": ctm}
    else:
        raise UnsupportedLayerError(f"nnx.onnx.export: Upsample mode {module.mode!r} is not supported")
    if module.scale_factor is not None:
        sf = module.scale_factor
        scales = list(sf) if isinstance(sf, (tuple, list)) else [sf] * (rank - 2)
        return g.node("Resize", [x, "", g.const([1.0, 1.0] + [float(s) for s in scales], dtype="float32")],
                      **attrs)
    size = module.size
    spatial = list(size) if isinstance(size, (tuple, list)) else [size] * (rank - 2)
    # N and C come from the input's runtime shape, so a dynamic batch stays dynamic
    batch_channels = g.node("Slice", [g.node("Shape", [x]), g.ints([0]), g.ints([2])])
    sizes = g.node("Concat", [batch_channels, g.ints(spatial)], axis=0)
    return g.node("Resize", [x, "", "", sizes], **attrs)


@register_converter(PixelShuffle)
def pixel_shuffle(g: GraphBuilder, module: PixelShuffle, inputs: list[str]) -> str:
    """``DepthToSpace`` in CRD mode (PyTorch's channel order)."""
    return g.node("DepthToSpace", inputs[:1], blocksize=int(module.upscale_factor), mode="CRD")


@register_converter(PixelUnshuffle)
def pixel_unshuffle(g: GraphBuilder, module: PixelUnshuffle, inputs: list[str]) -> str:
    """Reshape-transpose-reshape in PyTorch's channel order (ONNX's SpaceToDepth uses another)."""
    x = inputs[0]
    r = int(module.downscale_factor)
    _, c, h, w = g.shape(x)
    y = g.node("Reshape", [x, g.ints([0, c, h // r, r, w // r, r])])
    y = g.node("Transpose", [y], perm=[0, 1, 3, 5, 2, 4])
    return g.node("Reshape", [y, g.ints([0, c * r * r, h // r, w // r])])
