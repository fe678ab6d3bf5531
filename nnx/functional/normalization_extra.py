"""Instance and RMS normalisation kernels, forward + backward: instance_norm, rms_norm.

* ``instance_norm`` normalises each ``(sample, channel)`` over its spatial positions (the
  mean and biased variance of those positions), then a per-channel affine transform; with running
  statistics it updates them with the batch average of the per-instance statistics (the variance
  unbiased over the spatial count), as PyTorch, or normalises with them (``use_input_stats=False``).
* ``rms_norm`` divides by the root mean square over the trailing ``normalized_shape`` axes
  (``eps`` None: the dtype's machine epsilon, as PyTorch), then an elementwise ``weight``.

The backward passes are the closed forms (no autograd).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from .normalization import _batch_norm_eval, _grouped_affine_norm, _running_update

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = ["instance_norm", "instance_norm_forward", "instance_norm_running_forward", "rms_norm", "rms_norm_forward"]


def instance_norm_running_forward(x: Array, running_mean: Array | None = None, running_var: Array | None = None,
                                  weight: Array | None = None, bias: Array | None = None,
                                  use_input_stats: bool = True, momentum: Any = 0.1, eps: float = 1e-5, *,
                                  where: str = "instance_norm",
                                  ) -> tuple[Array, Backward, Array | None, Array | None]:
    """Instance normalisation that returns the new running statistics instead of writing them.

    ``x`` is ``(N, C, *)`` with at least one spatial axis; ``weight``/``bias``/running statistics
    are ``(C,)``. Returns ``(y, backward, new_running_mean, new_running_var)``, the last two None
    where nothing is updated (``use_input_stats=False`` or no statistic given). ``backward(dy,
    input_grad=True)`` returns ``(dx, (dweight, dbias))``.

    >>> import nnx
    >>> y, back, _, _ = instance_norm_running_forward(nnx.asarray([[[1.0, 3.0]]]))
    >>> nnx.to_numpy(y).round(3).tolist()
    [[[-1.0, 1.0]]]
    """
    b = backends.backend_of(x)
    xp = b.xp
    if x.ndim < 3:
        raise ValueError(f"{where}: expected input of shape (N, C, *) with at least one spatial dimension, "
                         f"got shape {tuple(x.shape)}")
    shape = tuple(x.shape)
    n, c = shape[0], shape[1]
    for name, v in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if v is not None and tuple(v.shape) != (c,):
            raise ValueError(f"{where}: {name} must have shape ({c},) for an input with {c} channels, "
                             f"got {name} shape {tuple(v.shape)} and input shape {shape}")
    eps = float(eps)
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError(f"{where}: use_input_stats=False needs running_mean and running_var")
        y, backward = _batch_norm_eval(xp, x, running_mean, running_var, weight, bias, eps,
                                       (0,) + tuple(range(2, x.ndim)))
        return y, backward, None, None
    count = 1
    for s in shape[2:]:
        count *= s
    if count <= 1:
        raise ValueError(f"{where}: expected more than 1 spatial element when training, got input shape {shape}")
    y, backward = _grouped_affine_norm(xp, x, (n, c, count), weight, bias, eps)
    x3 = xp.reshape(x, (n, c, count))
    new_mean = new_var = None
    if running_mean is not None or running_var is not None:
        mean = xp.mean(x3, axis=2, keepdims=True)  # (N, C, 1)
        if running_mean is not None:
            new_mean = _running_update(xp, running_mean, xp.mean(mean[..., 0], axis=0), momentum)
        if running_var is not None:
            xc = x3 - mean
            var = xp.sum(xc * xc, axis=2) * (1.0 / (count - 1))  # unbiased per instance, (N, C)
            new_var = _running_update(xp, running_var, xp.mean(var, axis=0), momentum)
    return y, backward, new_mean, new_var


def instance_norm_forward(x: Array, running_mean: Array | None = None, running_var: Array | None = None,
                          weight: Array | None = None, bias: Array | None = None, use_input_stats: bool = True,
                          momentum: Any = 0.1, eps: float = 1e-5, *,
                          where: str = "instance_norm") -> tuple[Array, Backward]:
    """Instance normalisation (``torch.nn.functional.instance_norm``): ``(y, backward)``.

    Running statistics, when given and ``use_input_stats`` is True, are updated in place (a
    mutable library only; on JAX use :func:`instance_norm_running_forward`, as the layers do).

    >>> import nnx
    >>> y, back = instance_norm_forward(nnx.asarray([[[1.0, 3.0]]]))
    >>> nnx.to_numpy(back(nnx.asarray([[[1.0, 1.0]]]))[0]).tolist()   # a constant shift: no gradient
    [[[0.0, 0.0]]]
    """
    b = backends.backend_of(x)
    if use_input_stats and not b.mutable and (running_mean is not None or running_var is not None):
        raise ValueError(f"{where}: cannot update running_mean/running_var in place on backend {b.name!r} "
                         "(its arrays are immutable); use instance_norm_running_forward or the InstanceNorm layers")
    y, backward, new_mean, new_var = instance_norm_running_forward(x, running_mean, running_var, weight, bias,
                                                                   use_input_stats, momentum, eps, where=where)
    if new_mean is not None:
        b.at_set(running_mean, ..., new_mean)
    if new_var is not None:
        b.at_set(running_var, ..., new_var)
    return y, backward


def instance_norm(x: Array, running_mean: Array | None = None, running_var: Array | None = None,
                  weight: Array | None = None, bias: Array | None = None, use_input_stats: bool = True,
                  momentum: Any = 0.1, eps: float = 1e-5) -> Array:
    """Functional form of :func:`instance_norm_forward` (as ``torch.nn.functional.instance_norm``)."""
    return instance_norm_forward(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)[0]


def normalized_shape_tuple(where: str, normalized_shape: Any) -> tuple[int, ...]:
    """``normalized_shape`` (an int or a sequence of positive ints) as a tuple, validated.

    >>> normalized_shape_tuple("rms_norm", 4)
    (4,)
    """
    if isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool):
        shape: tuple = (normalized_shape,)
    elif isinstance(normalized_shape, (tuple, list)):
        shape = tuple(normalized_shape)
    else:
        shape = ()
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"{where}: normalized_shape must be a positive integer or a tuple of positive integers, "
                         f"got {normalized_shape!r}")
    return shape


def rms_norm_forward(x: Array, normalized_shape: Any, weight: Array | None = None, eps: float | None = None, *,
                     where: str = "rms_norm") -> tuple[Array, Backward]:
    """RMS normalisation (``torch.nn.functional.rms_norm``) over the trailing ``normalized_shape`` axes.

    ``y = x / sqrt(mean(x**2) + eps) * weight``; ``eps=None`` uses ``finfo(x.dtype).eps``;
    ``weight`` has shape ``normalized_shape``. ``backward(dy, input_grad=True)`` returns
    ``(dx, (dweight,))``.

    >>> import nnx
    >>> y, back = rms_norm_forward(nnx.asarray([[3.0, -3.0]]), 2, eps=0.0)
    >>> nnx.to_numpy(y).tolist()
    [[1.0, -1.0]]
    """
    xp = backends.backend_of(x).xp
    shape = normalized_shape_tuple(where, normalized_shape)
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"{where}: expected input of shape (*, {', '.join(map(str, shape))}), "
                         f"got shape {tuple(x.shape)}")
    if weight is not None and tuple(weight.shape) != shape:
        raise ValueError(f"{where}: weight must have shape {shape}, got {tuple(weight.shape)}")
    if eps is None:
        eps = float(xp.finfo(x.dtype).eps)
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    inv = 1.0 / xp.sqrt(xp.mean(x * x, axis=axes, keepdims=True) + float(eps))
    xhat = x * inv
    y = xhat * weight if weight is not None else xhat

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dweight = xp.sum(dy * xhat, axis=lead) if weight is not None else None
        dx = None
        if input_grad:
            g = dy * weight if weight is not None else dy
            dx = (g - xhat * xp.mean(g * xhat, axis=axes, keepdims=True)) * inv
        return dx, (dweight,)

    return y, backward


def rms_norm(x: Array, normalized_shape: Any, weight: Array | None = None, eps: float | None = None) -> Array:
    """Functional form of :func:`rms_norm_forward` (as ``torch.nn.functional.rms_norm``)."""
    return rms_norm_forward(x, normalized_shape, weight, eps)[0]
