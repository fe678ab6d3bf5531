"""ONNX converters of the convolutions, pools and resampling layers (NCHW, as ONNX)."""

from __future__ import annotations

from typing import Any

from ..layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    MaxPool2d,
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


@register_converter(Conv1d, Conv2d)
def conv(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """``Conv`` with strides, pads, dilations and groups."""
    _check_padding_mode(module)
    args = [inputs[0], g.param(module, "weight")] + ([g.param(module, "bias")] if module.bias is not None else [])
    return g.node("Conv", args, kernel_shape=list(module.kernel_size), strides=list(module.stride),
                  dilations=list(module.dilation), group=int(module.groups),
                  pads=_pads(module.padding, module.kernel_size, module.dilation))


@register_converter(ConvTranspose2d)
def conv_transpose(g: GraphBuilder, module: ConvTranspose2d, inputs: list[str]) -> str:
    """``ConvTranspose`` (the weight layout ``(in, out/groups, kh, kw)`` is ONNX's too)."""
    _check_padding_mode(module)
    args = [inputs[0], g.param(module, "weight")] + ([g.param(module, "bias")] if module.bias is not None else [])
    return g.node("ConvTranspose", args, kernel_shape=list(module.kernel_size), strides=list(module.stride),
                  dilations=list(module.dilation), group=int(module.groups),
                  pads=_pads(module.padding, module.kernel_size, module.dilation),
                  output_padding=list(module.output_padding))


@register_converter(MaxPool2d)
def max_pool(g: GraphBuilder, module: MaxPool2d, inputs: list[str]) -> str:
    """``MaxPool`` (implicit -inf padding, dilation and ceil_mode as PyTorch)."""
    return g.node("MaxPool", inputs[:1], kernel_shape=list(module.kernel_size), strides=list(module.stride),
                  pads=list(module.padding) * 2, dilations=list(module.dilation), ceil_mode=int(module.ceil_mode))


@register_converter(AvgPool2d)
def avg_pool(g: GraphBuilder, module: AvgPool2d, inputs: list[str]) -> str:
    """``AveragePool``; a ``divisor_override`` becomes a scale of the window sum."""
    kernel = list(module.kernel_size)
    if module.divisor_override is not None and (module.ceil_mode or any(module.padding)
                                                and not module.count_include_pad):
        raise UnsupportedLayerError("nnx.onnx.export: AvgPool2d with divisor_override and ceil_mode (or "
                                    "count_include_pad=False with padding) is not supported")
    count_pad = 1 if module.divisor_override is not None else int(module.count_include_pad)
    y = g.node("AveragePool", inputs[:1], kernel_shape=kernel, strides=list(module.stride),
               pads=list(module.padding) * 2, ceil_mode=int(module.ceil_mode), count_include_pad=count_pad)
    if module.divisor_override is not None:
        y = g.node("Mul", [y, g.const(kernel[0] * kernel[1] / module.divisor_override, like=y)])
    return y


@register_converter(AdaptiveAvgPool2d)
def adaptive_avg_pool(g: GraphBuilder, module: AdaptiveAvgPool2d, inputs: list[str]) -> str:
    """``GlobalAveragePool`` for output 1x1, an ``AveragePool`` when the sizes divide evenly."""
    x = inputs[0]
    size = module.output_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    h, w = g.shape(x)[-2:]
    out = tuple(i if o is None else o for o, i in zip(size, (h, w), strict=True))
    if out == (1, 1):
        return g.node("GlobalAveragePool", [x])
    if h % out[0] or w % out[1]:
        raise UnsupportedLayerError(f"nnx.onnx.export: AdaptiveAvgPool2d(output_size={module.output_size!r}) on a "
                                    f"{h}x{w} input has overlapping windows, which ONNX cannot express; use sizes "
                                    "that divide the input")
    kernel = [h // out[0], w // out[1]]
    return g.node("AveragePool", [x], kernel_shape=kernel, strides=kernel)


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
