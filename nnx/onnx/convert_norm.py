"""ONNX converters of the normalisation layers (eval mode: BatchNorm uses its running statistics)."""

from __future__ import annotations

from typing import Any

from ..layers import BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d, InstanceNorm2d, LayerNorm, RMSNorm
from .builder import GraphBuilder, UnsupportedLayerError, register_converter


def _affine(g: GraphBuilder, module: Any, attr: str, fill: float, shape: list[int], like: str) -> str:
    """The initialiser of ``module.<attr>``, or a constant ``fill`` when the layer has none."""
    if getattr(module, attr, None) is not None:
        return g.param(module, attr)
    count = 1
    for s in shape:
        count *= s
    values: Any = [fill] * count
    for s in reversed(shape[1:]):  # nest to the wanted shape
        values = [values[i:i + s] for i in range(0, len(values), s)]
    return g.const(values, like=like)


@register_converter(BatchNorm1d, BatchNorm2d)
def batch_norm(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """``BatchNormalization`` with the running mean and variance (inference form)."""
    if getattr(module, "running_mean", None) is None:
        raise UnsupportedLayerError(f"nnx.onnx.export: {type(module).__name__} with track_running_stats=False "
                                    "normalises with batch statistics in eval mode, which is not exported")
    x, n = inputs[0], module.num_features
    return g.node("BatchNormalization", [x, _affine(g, module, "weight", 1.0, [n], x),
                                         _affine(g, module, "bias", 0.0, [n], x), g.param(module, "running_mean"),
                                         g.param(module, "running_var")], epsilon=float(module.eps))


@register_converter(LayerNorm)
def layer_norm(g: GraphBuilder, module: LayerNorm, inputs: list[str]) -> str:
    """``LayerNormalization`` over the last ``len(normalized_shape)`` axes (opset 17)."""
    if g.opset_version < 17:
        raise UnsupportedLayerError("nnx.onnx.export: LayerNorm needs opset_version >= 17 "
                                    f"(LayerNormalization), got {g.opset_version}")
    x, shape = inputs[0], list(module.normalized_shape)
    return g.node("LayerNormalization", [x, _affine(g, module, "weight", 1.0, shape, x),
                                         _affine(g, module, "bias", 0.0, shape, x)],
                  axis=-len(shape), epsilon=float(module.eps))


@register_converter(GroupNorm)
def group_norm(g: GraphBuilder, module: GroupNorm, inputs: list[str]) -> str:
    """``InstanceNormalization`` of ``x`` viewed as ``(N, G, -1)``, then the per-channel affine.

    (ONNX's GroupNormalization changed the shape of its scale between opsets 18 and 21; this
    decomposition means the same in every opset.)
    """
    x = inputs[0]
    groups, rank = module.num_groups, g.rank(x)
    grouped = g.node("Reshape", [x, g.ints([0, groups, -1])])
    ones, zeros = g.const([1.0] * groups, like=x), g.const([0.0] * groups, like=x)
    normed = g.node("InstanceNormalization", [grouped, ones, zeros], epsilon=float(module.eps))
    y = g.node("Reshape", [normed, g.node("Shape", [x])])
    if module.weight is None and module.bias is None:
        return y
    per_channel = g.ints([module.num_channels] + [1] * (rank - 2))
    if module.weight is not None:
        y = g.node("Mul", [y, g.node("Reshape", [g.param(module, "weight"), per_channel])])
    if module.bias is not None:
        y = g.node("Add", [y, g.node("Reshape", [g.param(module, "bias"), per_channel])])
    return y


@register_converter(InstanceNorm1d, InstanceNorm2d)
def instance_norm(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """``InstanceNormalization`` (statistics of each sample and channel), or, with
    ``track_running_stats=True`` (eval mode uses the running statistics), ``BatchNormalization``
    with the running mean and variance. An unbatched ``(C, ...)`` input gets a batch axis around it."""
    x, n = inputs[0], module.num_features
    batched_rank = 3 if isinstance(module, InstanceNorm1d) else 4
    unbatched = g.rank(x) == batched_rank - 1
    if unbatched:
        x = g.node("Unsqueeze", [x, g.ints([0], hint="axes")])
    channels = (g.shape(inputs[0])[0] if unbatched else g.shape(inputs[0])[1])
    if channels != n and (module.affine or module.track_running_stats):
        raise UnsupportedLayerError(f"nnx.onnx.export: {type(module).__name__}({n}) got {channels} channels")
    if module.track_running_stats:
        y = g.node("BatchNormalization", [x, _affine(g, module, "weight", 1.0, [n], inputs[0]),
                                          _affine(g, module, "bias", 0.0, [n], inputs[0]),
                                          g.param(module, "running_mean"), g.param(module, "running_var")],
                   epsilon=float(module.eps))
    else:
        y = g.node("InstanceNormalization", [x, _affine(g, module, "weight", 1.0, [channels], inputs[0]),
                                             _affine(g, module, "bias", 0.0, [channels], inputs[0])],
                   epsilon=float(module.eps))
    return g.node("Squeeze", [y, g.ints([0], hint="axes")]) if unbatched else y


#: machine epsilon of the float dtypes (RMSNorm's default eps, as PyTorch)
_FINFO_EPS = {"float16": 0.0009765625, "float32": 1.1920928955078125e-07, "float64": 2.220446049250313e-16}


@register_converter(RMSNorm)
def rms_norm(g: GraphBuilder, module: RMSNorm, inputs: list[str]) -> str:
    """``RMSNormalization`` from opset 23; before, ``x / Sqrt(ReduceMean(x*x) + eps) * weight``.

    ``eps=None`` is the machine epsilon of the input dtype (as PyTorch).
    """
    x, shape = inputs[0], list(module.normalized_shape)
    dtype = g.dtype_name(x)
    eps = module.eps if module.eps is not None else _FINFO_EPS.get(dtype)
    if eps is None:
        raise UnsupportedLayerError(f"nnx.onnx.export: RMSNorm with eps=None on a {dtype} input")
    if g.opset_version >= 23:
        return g.node("RMSNormalization", [x, _affine(g, module, "weight", 1.0, shape, x)],
                      axis=-len(shape), epsilon=float(eps))
    rank = g.rank(x)
    axes = list(range(rank - len(shape), rank))
    square = g.node("Mul", [x, x])
    if g.opset_version >= 18:  # axes became an input in opset 18
        mean = g.node("ReduceMean", [square, g.ints(axes, hint="axes")], keepdims=1)
    else:
        mean = g.node("ReduceMean", [square], axes=axes, keepdims=1)
    y = g.node("Div", [x, g.node("Sqrt", [g.node("Add", [mean, g.const(float(eps), like=x)])])])
    if module.weight is not None:
        y = g.node("Mul", [y, g.param(module, "weight")])
    return y
