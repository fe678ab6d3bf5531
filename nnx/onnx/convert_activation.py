"""ONNX converters of the activations (PyTorch's definitions, opset 13 or later)."""

from __future__ import annotations

import math

from ..layers import (
    ELU,
    GELU,
    Hardtanh,
    LeakyReLU,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .builder import GraphBuilder, register_converter

_SIMPLE = {ReLU: "Relu", Tanh: "Tanh", Sigmoid: "Sigmoid"}


@register_converter(*_SIMPLE)
def simple(g: GraphBuilder, module: object, inputs: list[str]) -> str:
    """One ONNX op with no attribute (Relu, Tanh, Sigmoid)."""
    return g.node(_SIMPLE[type(module)], inputs[:1])


@register_converter(LeakyReLU)
def leaky_relu(g: GraphBuilder, module: LeakyReLU, inputs: list[str]) -> str:
    """``LeakyRelu(alpha=negative_slope)``."""
    return g.node("LeakyRelu", inputs[:1], alpha=float(module.negative_slope))


@register_converter(ELU)
def elu(g: GraphBuilder, module: ELU, inputs: list[str]) -> str:
    """``Elu(alpha)``."""
    return g.node("Elu", inputs[:1], alpha=float(module.alpha))


@register_converter(Softmax)
def softmax(g: GraphBuilder, module: Softmax, inputs: list[str]) -> str:
    """``Softmax``/``LogSoftmax`` along ``dim`` (opset 13 semantics: one axis, as PyTorch)."""
    op = "LogSoftmax" if isinstance(module, LogSoftmax) else "Softmax"
    dim = -1 if module.dim is None else module.dim
    return g.node(op, inputs[:1], axis=int(dim))


@register_converter(Hardtanh)
def hardtanh(g: GraphBuilder, module: Hardtanh, inputs: list[str]) -> str:
    """``Clip(x, min_val, max_val)``."""
    x = inputs[0]
    return g.node("Clip", [x, g.const(float(module.min_val), like=x), g.const(float(module.max_val), like=x)])


def _silu(g: GraphBuilder, x: str) -> str:
    return g.node("Mul", [x, g.node("Sigmoid", [x])])


@register_converter(SiLU)
def silu(g: GraphBuilder, module: SiLU, inputs: list[str]) -> str:
    """``x * Sigmoid(x)``."""
    return _silu(g, inputs[0])


def _softplus(g: GraphBuilder, x: str, beta: float, threshold: float) -> str:
    """PyTorch's softplus: ``log(1 + exp(beta x)) / beta``, ``x`` where ``beta x > threshold``."""
    bx = x if beta == 1.0 else g.node("Mul", [x, g.const(beta, like=x)])
    soft = g.node("Softplus", [bx])
    if beta != 1.0:
        soft = g.node("Div", [soft, g.const(beta, like=x)])
    return g.node("Where", [g.node("Greater", [bx, g.const(threshold, like=x)]), x, soft])


@register_converter(Softplus)
def softplus(g: GraphBuilder, module: Softplus, inputs: list[str]) -> str:
    """PyTorch's Softplus with ``beta`` and ``threshold``."""
    return _softplus(g, inputs[0], float(module.beta), float(module.threshold))


@register_converter(Mish)
def mish(g: GraphBuilder, module: Mish, inputs: list[str]) -> str:
    """``x * tanh(softplus(x))``."""
    x = inputs[0]
    return g.node("Mul", [x, g.node("Tanh", [_softplus(g, x, 1.0, 20.0)])])


@register_converter(GELU)
def gelu(g: GraphBuilder, module: GELU, inputs: list[str]) -> str:
    """Exact (erf) or tanh-approximated GELU, decomposed (ONNX's Gelu op needs opset 20)."""
    x = inputs[0]
    half_x = g.node("Mul", [x, g.const(0.5, like=x)])
    if module.approximate == "tanh":
        cube = g.node("Mul", [g.node("Mul", [x, x]), x])
        inner = g.node("Add", [x, g.node("Mul", [cube, g.const(0.044715, like=x)])])
        t = g.node("Tanh", [g.node("Mul", [inner, g.const(math.sqrt(2.0 / math.pi), like=x)])])
    else:
        t = g.node("Erf", [g.node("Mul", [x, g.const(1.0 / math.sqrt(2.0), like=x)])])
    return g.node("Mul", [half_x, g.node("Add", [t, g.const(1.0, like=x)])])


@register_converter(PReLU)
def prelu(g: GraphBuilder, module: PReLU, inputs: list[str]) -> str:
    """``PRelu`` with the slopes reshaped to broadcast over dimension 1 (the channels)."""
    x = inputs[0]
    slope = g.param(module, "weight")
    rank = g.rank(x)
    if module.num_parameters > 1 and rank > 2:
        slope = g.node("Reshape", [slope, g.ints([module.num_parameters] + [1] * (rank - 2))])
    return g.node("PRelu", [x, slope])
