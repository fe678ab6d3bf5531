"""Dense layers: Linear, Identity, Flatten."""

from __future__ import annotations

import math
from typing import Any

import nnx_backends as backends

from .. import functional as F
from .. import init
from ..backend import get_backend, get_default_dtype
from ..containers import PAIR_FUSIONS
from ..errors import check_dim, check_floating, check_ndim, check_positive_int, check_same_backend
from ..functional._device import device_shaped
from ..module import Module, Parameter


def new_parameter(shape: tuple[int, ...], dtype: Any = None, backend: Any = None, device: Any = None) -> Parameter:
    """An uninitialised (zero) parameter on the requested or current backend, default dtype float32."""
    b = get_backend() if backend is None and device is None else backends.get(
        backend if backend is not None else get_backend().name, device)
    dt = b.dtype(dtype if dtype is not None else get_default_dtype())
    return Parameter(b.xp.zeros(shape, dtype=dt, device=b.device))


class Linear(Module):
    """Fully connected layer ``y = x @ weight.T + bias`` (``torch.nn.Linear``).

    Args:
        in_features: size of the last input dimension.
        out_features: size of the last output dimension.
        bias: learn an additive bias (default True).
        dtype, backend, device: where the parameters are created (default: float32 on the
            current backend). ``backend`` is nnx's addition.

    Shapes: input ``(*, in_features)``, output ``(*, out_features)``; weight
    ``(out_features, in_features)``, bias ``(out_features,)``. Initialisation as PyTorch:
    U(-1/sqrt(in_features), 1/sqrt(in_features)) for both.

    >>> import nnx
    >>> layer = nnx.Linear(3, 2)
    >>> y = layer(nnx.asarray([[1.0, 2.0, 3.0]]))
    >>> tuple(y.shape), tuple(layer.backward(y).shape)
    ((1, 2), (1, 3))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__()
        self.in_features = check_positive_int("Linear", "in_features", in_features)
        self.out_features = check_positive_int("Linear", "out_features", out_features)
        self.weight = new_parameter((out_features, in_features), dtype, backend, device)
        self.bias = new_parameter((out_features,), dtype, backend, device) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        w = self.weight.data
        if (type(x) is not type(w) or x.dtype != w.dtype or x.ndim == 0 or x.shape[-1] != self.in_features
                or backends.device_of(x) != backends.device_of(w)):
            self._check(x)
        b = self.bias.data if self.bias is not None else None
        y, backward = F.linear_forward(x, w, b)
        return self.record(y, backward, params=("weight", "bias"))

    def _forward_activated(self, x: Any, act: str, activation: Module) -> Any:
        """This layer and ``activation`` (the next child of a Sequential) as one matrix product and one
        fused kernel. Both record: the activation an identity (its work is in this layer's closure)."""
        w = self.weight.data
        if (type(x) is not type(w) or x.dtype != w.dtype or x.ndim == 0 or x.shape[-1] != self.in_features
                or backends.device_of(x) != backends.device_of(w)):
            self._check(x)
        y, backward = F.linear_act_forward(x, w, self.bias.data if self.bias is not None else None, act)
        return activation.record(self.record(y, backward, params=("weight", "bias")), _passed_through)

    def _check(self, x: Any) -> None:
        where = f"Linear(in_features={self.in_features}, out_features={self.out_features})"
        w = self.weight.data
        check_same_backend(where, x, w)
        check_floating(where, x, w.dtype)
        if x.ndim == 0:
            check_ndim(where, x, (1, 2), "of shape (*, in_features)")
        check_dim(where, x, x.ndim - 1, self.in_features, "in_features")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """Returns its input unchanged (a placeholder, as ``torch.nn.Identity``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Any) -> Any:
        return input

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        return grad_output if input_grad else None


class Flatten(Module):
    """Merge dimensions ``start_dim..end_dim`` (default: all but the batch dimension)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        nd = x.ndim
        for d in (self.start_dim, self.end_dim):
            if not -nd <= d < max(nd, 1):
                raise ValueError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}): "
                                 f"dimension {d} out of range for input of shape {tuple(x.shape)}")
        y, backward = F.flatten_forward(x, self.start_dim, self.end_dim)
        return self.record(y, backward)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


def _passed_through(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
    return dy, ()


_ACTIVATIONS: dict[type, str] = {}  # activation module type -> the adapter's name (filled on first use)


def _fused_activation(m: Module) -> str | None:
    if not _ACTIVATIONS:
        from .activation import GELU, ReLU, Sigmoid, SiLU, Tanh

        _ACTIVATIONS.update({ReLU: "relu", Tanh: "tanh", Sigmoid: "sigmoid", SiLU: "silu", GELU: "gelu"})
    act = _ACTIVATIONS.get(type(m))
    if act == "gelu" and m.approximate != "none":
        return "gelu_tanh"
    return act


def _fuse_linear_activation(first: Module, second: Module) -> Any:
    """Sequential's rule for ``Linear`` followed by ReLU/Tanh/Sigmoid/GELU/SiLU on the device-shaped
    path: ``matmul`` + one bias-and-activation kernel forward, one kernel + two products backward
    (instead of separate bias, activation and bias-gradient launches). A host adapter fuses the
    activations its kernels run (``fast_activations()``; NumPy with its host kernels: ReLU and
    Sigmoid): the bias add joins the activation's C-pool task instead of a NumPy pass on one thread
    (the MLP benchmark at 2 threads, measured alternated: 54,754-74,915 -> 70,137-72,825 samples/s),
    with the same arithmetic, so the same bits."""
    if type(first) is not Linear:
        return None
    act = _fused_activation(second)
    if act is None:
        return None
    b = backends.backend_of(first.weight.data)
    if not device_shaped(b) and act not in b.fast_activations():
        return None
    return lambda x: first._forward_activated(x, act, second)


PAIR_FUSIONS.append(_fuse_linear_activation)
