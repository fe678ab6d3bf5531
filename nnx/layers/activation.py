"""Activation layers: thin Modules over :mod:`nnx.functional.activation`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from .. import functional as F
from .. import init
from ..errors import check_positive_int
from ..module import Module


class _Activation(Module):
    _forward: Callable = staticmethod(F.relu_forward)

    def _kwargs(self) -> dict[str, Any]:
        return {}

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        y, backward = type(self)._forward(x, **self._kwargs())
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._kwargs().items())


def _inplace_ignored(name: str, inplace: bool) -> None:
    """``inplace=True`` is accepted for PyTorch compatibility; nnx never overwrites its input, so say so once."""
    if inplace:
        warnings.warn(f"{name}(inplace=True): nnx activations never modify their input; the flag is ignored "
                      "and the output is a new array (same results, no memory saved)", UserWarning, stacklevel=3)


class ReLU(_Activation):
    """max(x, 0). ``inplace=True`` is accepted for PyTorch compatibility and ignored, with a warning."""

    _forward = staticmethod(F.relu_forward)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        _inplace_ignored("ReLU", inplace)


class LeakyReLU(_Activation):
    """x for x > 0, else ``negative_slope * x``."""

    _forward = staticmethod(F.leaky_relu_forward)

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def _kwargs(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class ELU(_Activation):
    """x for x > 0, else ``alpha * (exp(x) - 1)``."""

    _forward = staticmethod(F.elu_forward)

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha

    def _kwargs(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), stable for any x."""

    _forward = staticmethod(F.sigmoid_forward)


class Tanh(_Activation):
    """Hyperbolic tangent."""

    _forward = staticmethod(F.tanh_forward)


class GELU(_Activation):
    """x * Phi(x); ``approximate="tanh"`` for the tanh approximation."""

    _forward = staticmethod(F.gelu_forward)

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _kwargs(self) -> dict[str, Any]:
        return {"approximate": self.approximate}


class SiLU(_Activation):
    """x * sigmoid(x)."""

    _forward = staticmethod(F.silu_forward)


class Mish(_Activation):
    """x * tanh(softplus(x))."""

    _forward = staticmethod(F.mish_forward)


class Softplus(_Activation):
    """log(1 + exp(beta x)) / beta, linear above ``threshold``."""

    _forward = staticmethod(F.softplus_forward)

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def _kwargs(self) -> dict[str, Any]:
        return {"beta": self.beta, "threshold": self.threshold}


class Hardtanh(_Activation):
    """clip(x, min_val, max_val)."""

    _forward = staticmethod(F.hardtanh_forward)

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        super().__init__()
        self.min_val, self.max_val = min_val, max_val

    def _kwargs(self) -> dict[str, Any]:
        return {"min_val": self.min_val, "max_val": self.max_val}


class Softmax(_Activation):
    """exp(x) / sum(exp(x)) along ``dim``."""

    _forward = staticmethod(F.softmax_forward)

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def _kwargs(self) -> dict[str, Any]:
        return {"dim": self.dim}


class LogSoftmax(Softmax):
    """log(softmax(x)) along ``dim``, computed stably."""

    _forward = staticmethod(F.log_softmax_forward)


class PReLU(Module):
    """``x`` for ``x > 0``, else ``weight * x``, with a learned slope (``torch.nn.PReLU``).

    Args:
        num_parameters: 1 (one slope shared by all channels) or the number of channels (dimension 1
            of the input).
        init: the initial slope (default 0.25).

    Parameter ``weight`` of shape ``(num_parameters,)``.

    >>> act = nnx.PReLU(num_parameters=16)        # one slope per channel (dimension 1)
    >>> tuple(act.weight.shape)
    (16,)
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, dtype: Any = None, backend: Any = None,
                 device: Any = None) -> None:
        super().__init__()
        from .linear import new_parameter

        self.num_parameters = check_positive_int("PReLU", "num_parameters", num_parameters)
        self.init = init
        self.weight = new_parameter((num_parameters,), dtype, backend, device)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set every slope to ``init``."""
        init.constant_(self.weight, self.init)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        y, backward = F.prelu_forward(x, self.weight.data)
        return self.record(y, backward, params=("weight",))

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"
