"""Parameter initialisers with PyTorch's names, formulas and defaults (``torch.nn.init``).

Each function fills a :class:`~nnx.Parameter` (or replaces an array) in place and returns it. The
random numbers come from the parameter's backend generator, so ``nnx.manual_seed`` makes
initialisation reproducible per backend.

>>> layer = nnx.Linear(256, 128)
>>> w = nnx.init.kaiming_normal_(layer.weight, nonlinearity="relu")   # std sqrt(2 / fan_in)
>>> round(float(nnx.get_backend().xp.std(layer.weight.data)) * 256 ** 0.5 / 2 ** 0.5, 1)
1.0
"""

from __future__ import annotations

import math
from typing import Any

import nnx_backends as backends

from .module import Parameter

_GAINS = {"linear": 1.0, "identity": 1.0, "sigmoid": 1.0, "conv1d": 1.0, "conv2d": 1.0, "conv3d": 1.0,
          "conv_transpose1d": 1.0, "conv_transpose2d": 1.0, "conv_transpose3d": 1.0,
          "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0), "selu": 0.75}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (``torch.nn.init.calculate_gain``)."""
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope * slope))
    if nonlinearity not in _GAINS:
        raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}; "
                         f"expected one of {sorted(_GAINS) + ['leaky_relu']}")
    return _GAINS[nonlinearity]


def _calculate_fan_in_and_fan_out(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"init: fan in and fan out need at least 2 dimensions, got shape {shape}")
    receptive = 1
    for s in shape[2:]:
        receptive *= s
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape: tuple[int, ...], mode: str) -> int:
    fan_in, fan_out = _calculate_fan_in_and_fan_out(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")


def _target(t: Parameter | Any) -> tuple[backends.Backend, tuple[int, ...], Any]:
    arr = t.data if isinstance(t, Parameter) else t
    return backends.backend_of(arr), tuple(arr.shape), arr.dtype


def _assign(t: Parameter | Any, value: Any) -> Any:
    if isinstance(t, Parameter):
        t.data = value
        return t
    t[...] = value
    return t


def uniform_(t: Parameter | Any, a: float = 0.0, b: float = 1.0) -> Any:
    """Fill with samples of U(a, b)."""
    be, shape, dtype = _target(t)
    return _assign(t, be.uniform(shape, float(a), float(b), dtype))


def normal_(t: Parameter | Any, mean: float = 0.0, std: float = 1.0) -> Any:
    """Fill with samples of N(mean, std^2)."""
    be, shape, dtype = _target(t)
    return _assign(t, be.normal(shape, float(mean), float(std), dtype))


def constant_(t: Parameter | Any, val: float) -> Any:
    """Fill with ``val``."""
    be, shape, dtype = _target(t)
    return _assign(t, be.xp.full(shape, float(val), dtype=dtype, device=be.device))


def zeros_(t: Parameter | Any) -> Any:
    """Fill with zeros."""
    return constant_(t, 0.0)


def ones_(t: Parameter | Any) -> Any:
    """Fill with ones."""
    return constant_(t, 1.0)


def xavier_uniform_(t: Parameter | Any, gain: float = 1.0) -> Any:
    """Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    _, shape, _ = _target(t)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -a, a)


def xavier_normal_(t: Parameter | Any, gain: float = 1.0) -> Any:
    """Glorot normal: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    _, shape, _ = _target(t)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(shape)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(t: Parameter | Any, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu") -> Any:
    """He uniform: U(-b, b) with b = gain * sqrt(3 / fan)."""
    _, shape, _ = _target(t)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(shape, mode))
    return uniform_(t, -bound, bound)


def kaiming_normal_(t: Parameter | Any, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> Any:
    """He normal: N(0, std^2) with std = gain / sqrt(fan)."""
    _, shape, _ = _target(t)
    return normal_(t, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode)))


def orthogonal_(t: Parameter | Any, gain: float = 1.0) -> Any:
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian matrix (Saxe et al.).

    The QR factorisation comes from the backend (the standard's optional linalg extension, or a
    host-side fallback); it runs once, at initialisation.
    """
    be, shape, dtype = _target(t)
    if len(shape) < 2:
        raise ValueError(f"orthogonal_: needs at least 2 dimensions, got shape {shape}")
    xp = be.xp
    rows = shape[0]
    cols = 1
    for s in shape[1:]:
        cols *= s
    gaussian = be.normal((max(rows, cols), min(rows, cols)), 0.0, 1.0, xp.float64)
    q, r = be.qr(gaussian)
    k = min(rows, cols)
    diag = xp.sum(r * xp.eye(k, dtype=r.dtype, device=be.device), axis=0)
    q = q * xp.sign(diag)  # as torch; where(diag < 0, -1.0, 1.0) has two scalars, which the standard rejects
    if rows < cols:
        q = xp.matrix_transpose(q)
    return _assign(t, xp.astype(xp.reshape(gain * q, shape), dtype))
