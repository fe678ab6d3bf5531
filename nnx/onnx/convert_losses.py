"""ONNX converters of the losses' inference forms: ``loss(input, target)`` as a graph with two inputs.

Exported: MSELoss, L1Loss, HuberLoss, SmoothL1Loss, CrossEntropyLoss (class-index targets, no
label smoothing), NLLLoss, BCELoss and BCEWithLogitsLoss, every reduction. The other losses
(KLDivLoss, PoissonNLLLoss, GaussianNLLLoss and the ranking/embedding losses) have no converter
and raise :class:`UnsupportedLayerError` naming them; register one if a runtime needs it.
"""

from __future__ import annotations

from typing import Any

from ..losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss
from .builder import GraphBuilder, UnsupportedLayerError, register_converter


def _reduce(g: GraphBuilder, module: Any, loss: str) -> str:
    """``mean``/``sum`` over every element (no axes: all of them), or the elementwise loss."""
    if module.reduction == "none":
        return loss
    return g.node("ReduceMean" if module.reduction == "mean" else "ReduceSum", [loss], keepdims=0)


def _two(name: str, inputs: list[str]) -> tuple[str, str]:
    if len(inputs) != 2:
        raise UnsupportedLayerError(f"nnx.onnx.export: {name} is exported as loss(input, target); got "
                                    f"{len(inputs)} inputs")
    return inputs[0], inputs[1]


@register_converter(MSELoss, L1Loss)
def mse_l1(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """``(x - t)^2`` or ``|x - t|``, reduced."""
    x, t = _two(type(module).__name__, inputs)
    d = g.node("Sub", [x, t])
    return _reduce(g, module, g.node("Mul", [d, d]) if isinstance(module, MSELoss) else g.node("Abs", [d]))


@register_converter(HuberLoss, SmoothL1Loss)
def huber(g: GraphBuilder, module: Any, inputs: list[str]) -> str:
    """Quadratic below ``delta`` (``beta``), linear above; SmoothL1 is Huber divided by ``beta``."""
    x, t = _two(type(module).__name__, inputs)
    ad = g.node("Abs", [g.node("Sub", [x, t])])
    smooth = isinstance(module, SmoothL1Loss)
    c = float(module.beta if smooth else module.delta)
    if smooth and c == 0.0:
        return _reduce(g, module, ad)
    quad = g.node("Mul", [g.node("Mul", [ad, ad]), g.const(0.5 / c if smooth else 0.5, like=x)])
    lin = g.node("Sub", [ad, g.const(0.5 * c, like=x)])
    if not smooth:
        lin = g.node("Mul", [lin, g.const(c, like=x)])
    return _reduce(g, module, g.node("Where", [g.node("Less", [ad, g.const(c, like=x)]), quad, lin]))


def _weight(g: GraphBuilder, module: Any) -> list[str]:
    return [g.param(module, "weight")] if getattr(module, "weight", None) is not None else []


@register_converter(CrossEntropyLoss)
def cross_entropy(g: GraphBuilder, module: CrossEntropyLoss, inputs: list[str]) -> str:
    """``SoftmaxCrossEntropyLoss`` (weights, ignore_index and reduction as PyTorch)."""
    x, t = _two("CrossEntropyLoss", inputs)
    if module.label_smoothing or not g.dtype_name(t).startswith("int"):
        raise UnsupportedLayerError("nnx.onnx.export: CrossEntropyLoss is exported for class-index targets "
                                    "without label_smoothing only")
    return g.node("SoftmaxCrossEntropyLoss", [x, t] + _weight(g, module), reduction=module.reduction,
                  ignore_index=int(module.ignore_index))


@register_converter(NLLLoss)
def nll(g: GraphBuilder, module: NLLLoss, inputs: list[str]) -> str:
    """``NegativeLogLikelihoodLoss`` (weights, ignore_index and reduction as PyTorch)."""
    x, t = _two("NLLLoss", inputs)
    return g.node("NegativeLogLikelihoodLoss", [x, t] + _weight(g, module), reduction=module.reduction,
                  ignore_index=int(module.ignore_index))


@register_converter(BCELoss)
def bce(g: GraphBuilder, module: BCELoss, inputs: list[str]) -> str:
    """``-(t log p + (1 - t) log(1 - p))`` with the logs clamped at -100 (as PyTorch)."""
    p, t = _two("BCELoss", inputs)
    floor = g.const(-100.0, like=p)
    one = g.const(1.0, like=p)
    log_p = g.node("Max", [g.node("Log", [p]), floor])
    log_q = g.node("Max", [g.node("Log", [g.node("Sub", [one, p])]), floor])
    loss = g.node("Neg", [g.node("Add", [g.node("Mul", [t, log_p]),
                                         g.node("Mul", [g.node("Sub", [one, t]), log_q])])])
    for w in _weight(g, module):
        loss = g.node("Mul", [loss, w])
    return _reduce(g, module, loss)


@register_converter(BCEWithLogitsLoss)
def bce_with_logits(g: GraphBuilder, module: BCEWithLogitsLoss, inputs: list[str]) -> str:
    """``(1 - t) x + (1 + (pw - 1) t) (log(1 + e^{-|x|}) + max(-x, 0))`` (stable, as PyTorch)."""
    x, t = _two("BCEWithLogitsLoss", inputs)
    one, zero = g.const(1.0, like=x), g.const(0.0, like=x)
    soft = g.node("Add", [g.node("Log", [g.node("Add", [one, g.node("Exp", [g.node("Neg", [g.node("Abs", [x])])])])]),
                          g.node("Max", [g.node("Neg", [x]), zero])])
    scale: str = one
    if module.pos_weight is not None:
        pw = g.param(module, "pos_weight")
        scale = g.node("Add", [one, g.node("Mul", [g.node("Sub", [pw, one]), t])])
    loss = g.node("Add", [g.node("Mul", [g.node("Sub", [one, t]), x]), g.node("Mul", [scale, soft])])
    for w in _weight(g, module):
        loss = g.node("Mul", [loss, w])
    return _reduce(g, module, loss)
