"""ONNX converters of max pooling with indices and of max unpooling, with PyTorch's indices.

nnx (as PyTorch) numbers a maximum by its flat position in its own ``H*W`` plane; ONNX's
``MaxPool`` numbers it over the whole tensor and ``MaxUnpool`` expects that numbering. So
``MaxPool2d(return_indices=True)`` exports as ``MaxPool`` with its ``Indices`` output taken modulo
``H*W``, and ``MaxUnpool2d`` as a ``ScatterElements`` along the flattened planes (a batch size left
dynamic by ``dynamic_axes`` keeps working). The spatial sizes are those of the example input.
"""

from __future__ import annotations

from typing import Any

from ..functional.unpooling import unpool_output_size
from ..layers.pooling import MaxPool2d
from ..layers.unpooling import MaxUnpool2d
from .builder import GraphBuilder, UnsupportedLayerError, register_converter
from .convert_conv import max_pool as _max_pool_without_indices


def _check_batched(g: GraphBuilder, module: Any, name: str) -> None:
    if g.rank(name) != 4:
        raise UnsupportedLayerError(f"nnx.onnx.export: {type(module).__name__} needs a batched (N, C, H, W) example "
                                    f"input, got shape {g.shape(name)}")


@register_converter(MaxPool2d)
def max_pool(g: GraphBuilder, module: MaxPool2d, inputs: list[str]) -> Any:
    """``MaxPool``; with ``return_indices``, its ``Indices`` output modulo ``H*W`` as the second output."""
    if not module.return_indices:
        return _max_pool_without_indices(g, module, inputs)
    _check_batched(g, module, inputs[0])
    h, w = g.shape(inputs[0])[2:]
    y, flat = g.node("MaxPool", inputs[:1], n_outputs=2, kernel_shape=list(module.kernel_size),
                     strides=list(module.stride), pads=list(module.padding) * 2, dilations=list(module.dilation),
                     ceil_mode=int(module.ceil_mode))
    return y, g.node("Mod", [flat, g.ints([h * w], hint="plane")])


@register_converter(MaxUnpool2d)
def max_unpool(g: GraphBuilder, module: MaxUnpool2d, inputs: list[str], output_size: Any = None) -> str:
    """``ScatterElements`` of the values into zero planes at PyTorch's per-plane indices."""
    x, indices = inputs[0], inputs[1]
    _check_batched(g, module, x)
    oh, ow = unpool_output_size(f"MaxUnpool2d({module.extra_repr()})", g.values[x], module.kernel_size,
                                module.stride, module.padding, output_size)
    batch_channels = g.node("Slice", [g.node("Shape", [x]), g.ints([0]), g.ints([2])])
    planes = g.node("Concat", [batch_channels, g.ints([oh * ow])], axis=0)
    zero = g.onnx.helper.make_tensor("value", g.elem_type(g.dtype_name(x)), [1], [0.0])
    zeros = g.node("ConstantOfShape", [planes], value=zero)
    flat = g.ints([0, 0, -1])
    scattered = g.node("ScatterElements", [zeros, g.node("Reshape", [indices, flat]), g.node("Reshape", [x, flat])],
                       axis=2)
    return g.node("Reshape", [scattered, g.node("Concat", [batch_channels, g.ints([oh, ow])], axis=0)])
