"""Activation functions: each ``*_forward`` returns ``(y, backward)``; plain names return ``y``.

Masks are applied by multiplying with the mask cast to the data's dtype rather than with
``where``: on NumPy a ``where`` over a random mask is about 15x slower (branch mispredictions)
than the branch-free product.

``backward(dy, input_grad=True)`` returns ``(dx, ())`` (activations have no parameters). All are
numerically stable at extreme inputs: sigmoid never exponentiates a positive number, softmax
subtracts the row maximum, softplus switches to the identity above its threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from ._device import device_shaped
from ._util import functional_form, namespace

__all__ = [
    "elu",
    "elu_forward",
    "gelu",
    "gelu_forward",
    "hardtanh",
    "hardtanh_forward",
    "leaky_relu",
    "leaky_relu_forward",
    "log_softmax",
    "log_softmax_forward",
    "mish",
    "mish_forward",
    "relu",
    "relu_forward",
    "sigmoid",
    "sigmoid_forward",
    "silu",
    "silu_forward",
    "softmax",
    "softmax_forward",
    "softplus",
    "softplus_forward",
    "tanh",
    "tanh_forward",
]

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _mask(xp: Any, condition: Array, dtype: Any) -> Array:
    return xp.astype(condition, dtype)


def _sigmoid(xp: Any, x: Array) -> Array:
    e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
    r = 1.0 / (1.0 + e)
    # x >= 0: r = 1 / (1 + e^-x);  x < 0: e * r = e^x / (1 + e^x)
    return r * (e + _mask(xp, x >= 0, x.dtype) * (1.0 - e))


def _device_act(x: Array, act: str) -> tuple[Array, Backward] | None:
    """The device-shaped formulation: the adapter's fused activation kernels (one launch forward,
    one backward, instead of two to four elementwise operations), or None on the CPU-shaped path.
    A host adapter that runs ``act`` as a fused kernel (``b.fast_activations()``: NumPy's host
    kernels for ReLU) takes it too."""
    b = backends.backend_of(x)
    if not device_shaped(b) and act not in b.fast_activations():
        return None
    y, saved = b.bias_act_forward(x, None, act)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return b.bias_act_backward(dy, saved, act, has_bias=False)[0], ()

    return y, backward


def relu_forward(x: Array) -> tuple[Array, Backward]:
    """max(x, 0)."""
    fused = _device_act(x, "relu")
    if fused is not None:
        return fused
    xp = namespace(x)
    y = xp.maximum(x, 0.0)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        dx = _mask(xp, y > 0, dy.dtype)  # a new array: multiply into it instead of allocating the product
        dx *= dy
        return dx, ()

    return y, backward


def leaky_relu_forward(x: Array, negative_slope: float = 0.01) -> tuple[Array, Backward]:
    """x where x > 0, else negative_slope * x."""
    xp = namespace(x)
    slope = float(negative_slope)
    factor = _mask(xp, x > 0, x.dtype) * (1.0 - slope) + slope  # 1 where x > 0, else slope
    y = x * factor

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy * factor, ()

    return y, backward


def elu_forward(x: Array, alpha: float = 1.0) -> tuple[Array, Backward]:
    """x where x > 0, else alpha * (exp(x) - 1)."""
    xp = namespace(x)
    alpha = float(alpha)
    pos = x > 0
    neg = alpha * xp.expm1(xp.minimum(x, 0.0))
    y = xp.where(pos, x, neg)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return xp.where(pos, dy, dy * (neg + alpha)), ()

    return y, backward


def sigmoid_forward(x: Array) -> tuple[Array, Backward]:
    """1 / (1 + exp(-x)), stable for any x."""
    fused = _device_act(x, "sigmoid")
    if fused is not None:
        return fused
    xp = namespace(x)
    y = _sigmoid(xp, x)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy * y * (1.0 - y), ()

    return y, backward


def tanh_forward(x: Array) -> tuple[Array, Backward]:
    """Hyperbolic tangent."""
    fused = _device_act(x, "tanh")
    if fused is not None:
        return fused
    xp = namespace(x)
    y = xp.tanh(x)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy * (1.0 - y * y), ()

    return y, backward


def gelu_forward(x: Array, approximate: str = "none") -> tuple[Array, Backward]:
    """Gaussian error linear unit: x * Phi(x), exact (``"none"``) or the ``"tanh"`` approximation.

    The exact form needs erf, which the standard lacks: it comes from the backend adapter.
    """
    if approximate in ("none", "tanh"):
        fused = _device_act(x, "gelu" if approximate == "none" else "gelu_tanh")
        if fused is not None:
            return fused
    xp = namespace(x)
    if approximate == "none":
        cdf = 0.5 * (1.0 + backends.backend_of(x).erf(x * _INV_SQRT_2))
        y = x * cdf

        def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
            pdf = _INV_SQRT_2PI * xp.exp(-0.5 * (x * x))
            return dy * (cdf + x * pdf), ()

    elif approximate == "tanh" and x.ndim >= 1:  # the adapter's fused kernel (few passes on NumPy)
        b = backends.backend_of(x)
        y, saved = b.bias_act_forward(x, None, "gelu_tanh")

        def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
            return b.bias_act_backward(dy, saved, "gelu_tanh", has_bias=False)[0], ()

    elif approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
        t = xp.tanh(inner)
        y = 0.5 * x * (1.0 + t)

        def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
            dinner = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * (x * x))
            return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner), ()

    else:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return y, backward


def silu_forward(x: Array) -> tuple[Array, Backward]:
    """x * sigmoid(x) (also called swish)."""
    fused = _device_act(x, "silu")
    if fused is not None:
        return fused
    xp = namespace(x)
    s = _sigmoid(xp, x)
    y = x * s

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy * (s * (1.0 + x * (1.0 - s))), ()

    return y, backward


def softplus_forward(x: Array, beta: float = 1.0, threshold: float = 20.0) -> tuple[Array, Backward]:
    """log(1 + exp(beta x)) / beta; the identity where beta x > threshold (as PyTorch)."""
    xp = namespace(x)
    beta, threshold = float(beta), float(threshold)
    bx = x * beta
    linear = bx > threshold
    y = xp.where(linear, x, xp.log1p(xp.exp(xp.minimum(bx, threshold))) / beta)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return xp.where(linear, dy, dy * _sigmoid(xp, bx)), ()

    return y, backward


def mish_forward(x: Array) -> tuple[Array, Backward]:
    """x * tanh(softplus(x))."""
    xp = namespace(x)
    sp = xp.where(x > 20.0, x, xp.log1p(xp.exp(xp.minimum(x, 20.0))))
    t = xp.tanh(sp)
    y = x * t

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy * (t + x * (1.0 - t * t) * _sigmoid(xp, x)), ()

    return y, backward


def hardtanh_forward(x: Array, min_val: float = -1.0, max_val: float = 1.0) -> tuple[Array, Backward]:
    """clip(x, min_val, max_val)."""
    xp = namespace(x)
    lo, hi = float(min_val), float(max_val)
    inside = (x > lo) & (x < hi)
    y = xp.minimum(xp.maximum(x, lo), hi)  # Python-float bounds keep x's dtype on every backend

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return xp.where(inside, dy, 0.0), ()

    return y, backward


def _in_dtype(forward: Callable[..., tuple[Array, Backward]], x: Array, dim: int, dtype: Any,
              where: str) -> tuple[Array, Backward]:
    """``forward(x cast to dtype, dim)`` (PyTorch's ``dtype=`` of softmax: the op runs in ``dtype``,
    the output has ``dtype``, the input gradient comes back in ``x``'s dtype)."""
    b = backends.backend_of(x)
    name = dtype if isinstance(dtype, str) else backends.Backend.dtype_name(dtype)
    try:
        target = b.dtype(name)
        floating = b.xp.isdtype(target, "real floating")
    except (TypeError, ValueError):
        floating = False
    if not floating:
        raise TypeError(f"{where}: dtype must be a real floating dtype (such as 'float64'), got {dtype!r}")
    source = x.dtype
    y, back = forward(b.xp.astype(x, target), dim)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        dx, _ = back(dy, input_grad)
        return b.xp.astype(dx, source), ()

    return y, backward


def _empty_forward(x: Array) -> tuple[Array, Backward]:
    """An op over an empty input: an empty output and an empty input gradient (as PyTorch)."""

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy * 1.0, ()

    return x * 1.0, backward


def softmax_forward(x: Array, dim: int = -1, dtype: Any = None) -> tuple[Array, Backward]:
    """exp(x) / sum(exp(x)) along ``dim``; the row maximum is subtracted first (no overflow).

    ``dtype`` (as PyTorch): compute in that floating dtype (``"float64"`` or a dtype object);
    the input gradient is returned in the input's dtype. An empty input (a zero-size ``dim``
    included) gives an empty output.

    >>> import nnx
    >>> y, back = softmax_forward(nnx.asarray([[0.0, 0.0]]), dim=1, dtype="float64")
    >>> nnx.to_numpy(y).tolist(), nnx.to_numpy(y).dtype.name
    ([[0.5, 0.5]], 'float64')
    """
    if dtype is not None:
        return _in_dtype(softmax_forward, x, dim, dtype, "softmax")
    xp = namespace(x)
    if 0 in tuple(x.shape):
        return _empty_forward(x)
    z = x - xp.max(x, axis=dim, keepdims=True)
    e = xp.exp(z)
    y = e / xp.sum(e, axis=dim, keepdims=True)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return y * (dy - xp.sum(dy * y, axis=dim, keepdims=True)), ()

    return y, backward


def log_softmax_forward(x: Array, dim: int = -1, dtype: Any = None) -> tuple[Array, Backward]:
    """x - logsumexp(x) along ``dim``, computed stably; ``dtype`` and empty inputs as :func:`softmax_forward`."""
    if dtype is not None:
        return _in_dtype(log_softmax_forward, x, dim, dtype, "log_softmax")
    xp = namespace(x)
    if 0 in tuple(x.shape):
        return _empty_forward(x)
    z = x - xp.max(x, axis=dim, keepdims=True)
    y = z - xp.log(xp.sum(xp.exp(z), axis=dim, keepdims=True))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        return dy - xp.exp(y) * xp.sum(dy, axis=dim, keepdims=True), ()

    return y, backward


relu = functional_form(relu_forward)
leaky_relu = functional_form(leaky_relu_forward)
elu = functional_form(elu_forward)
sigmoid = functional_form(sigmoid_forward)
tanh = functional_form(tanh_forward)
gelu = functional_form(gelu_forward)
silu = functional_form(silu_forward)
softplus = functional_form(softplus_forward)
mish = functional_form(mish_forward)
hardtanh = functional_form(hardtanh_forward)
softmax = functional_form(softmax_forward)
log_softmax = functional_form(log_softmax_forward)


def prelu_forward(x: Array, weight: Array) -> tuple[Array, Backward]:
    """PReLU: ``x`` where ``x > 0``, else ``weight * x``, with one learned slope per channel
    (dimension 1; a single slope when ``weight`` has one element), as ``F.prelu``.

    ``backward(dy)`` returns ``(dx, (dweight,))``.
    """
    xp = namespace(x)
    n = weight.shape[0] if weight.ndim else 1
    if n != 1 and (x.ndim < 2 or x.shape[1] != n):
        raise ValueError(f"prelu: {n} slopes need an input with {n} channels in dimension 1, "
                         f"got shape {tuple(x.shape)}")
    if n == 1 or x.ndim < 2:
        w = xp.reshape(weight, ())
    else:
        w = xp.reshape(weight, (1, n) + (1,) * (x.ndim - 2))
    positive = x > 0
    y = xp.where(positive, x, w * x)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array, tuple]:
        dx = xp.where(positive, dy, w * dy) if input_grad else None
        contrib = xp.where(positive, xp.zeros_like(x), x * dy)
        if n == 1 or x.ndim < 2:
            dw = xp.reshape(xp.sum(contrib), tuple(weight.shape))
        else:
            axes = (0,) + tuple(range(2, x.ndim))
            dw = xp.reshape(xp.sum(contrib, axis=axes), tuple(weight.shape))
        return dx, (dw,)

    return y, backward


prelu = functional_form(prelu_forward)
__all__ += ["prelu", "prelu_forward"]
