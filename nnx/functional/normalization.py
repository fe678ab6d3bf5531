"""Normalisation kernels, forward + backward: batch_norm, layer_norm, group_norm.

Each op normalises with the mean and the biased variance over its axes, then applies an optional
affine ``weight``/``bias``; the backward is the closed form (no autograd).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from ._device import device_shaped

Array = Any
Backward = Callable[..., tuple[Any, tuple]]

__all__ = [
    "batch_norm", "batch_norm_forward", "batch_norm_running_forward",
    "group_norm", "group_norm_forward",
    "layer_norm", "layer_norm_forward",
]


def _channel_shape(ndim: int, c: int) -> tuple[int, ...]:
    return (1, c) + (1,) * (ndim - 2)


def _channel_dot(xp: Any, a: Array, b: Array, axes: tuple[int, ...]) -> Array:
    """``sum(a * b)`` over ``axes`` (every axis but the channel axis 1) without an ``a * b`` temporary.

    For ``(N, C, ...)`` inputs: ``vecdot`` over the last axis (one fused multiply-add pass, any
    strides), then a sum of the small ``(N, C, ...)`` result; 2-D inputs use the plain product.
    """
    if a.ndim <= 2:
        return xp.sum(a * b, axis=axes)
    return xp.sum(xp.vecdot(a, b, axis=-1), axis=(0,) + tuple(range(2, a.ndim - 1)))


def _running_update(xp: Any, running: Array, batch: Array, momentum: Any) -> Array:
    """``(1 - momentum) * running + momentum * batch`` in ``running``'s dtype (a new array)."""
    if batch.dtype != running.dtype:
        batch = xp.astype(batch, running.dtype)
    return (1.0 - momentum) * running + momentum * batch


def batch_norm_running_forward(x: Array, running_mean: Array | None, running_var: Array | None,
                               weight: Array | None = None, bias: Array | None = None, training: bool = False,
                               momentum: Any = 0.1, eps: float = 1e-5, *, where: str = "batch_norm",
                               ) -> tuple[Array, Backward, Array | None, Array | None]:
    """Batch normalisation that returns the new running statistics instead of writing them.

    Same arguments and math as :func:`batch_norm_forward`; returns
    ``(y, backward, new_running_mean, new_running_var)``, the last two None where nothing is
    updated (evaluation, or the statistic not given). Nothing is written in place, so it works on
    every Array API library (immutable ones included); the caller stores the statistics (the
    ``BatchNorm`` layers assign their buffers).

    On backends whose arrays are not in host memory (CuPy, torch on CUDA), and on NumPy with its
    host kernels (``b.fast_batch_norm()``), training mode runs the adapter's fused kernels:
    ``batch_norm_stats`` (mean and variance), ``batch_norm_forward`` (normalise + affine) and
    ``batch_norm_backward`` (all three gradients), one launch each on CuPy.

    >>> import nnx
    >>> rm, rv = nnx.asarray([0.0]), nnx.asarray([1.0])
    >>> y, back, rm, rv = batch_norm_running_forward(nnx.asarray([[1.0], [3.0]]), rm, rv, training=True,
    ...                                              momentum=0.5)
    >>> nnx.to_numpy(rm).tolist(), nnx.to_numpy(rv).tolist()    # batch mean 2, unbiased variance 2
    ([1.0], [1.5])
    """
    b = backends.backend_of(x)
    xp = b.xp
    _check_batch_norm_shapes(where, x, running_mean, running_var, weight, bias)
    axes = (0,) + tuple(range(2, x.ndim))
    count = 1
    for i in axes:
        count *= x.shape[i]
    eps = float(eps)
    use_batch = training or running_mean is None or running_var is None
    if not use_batch:
        return _batch_norm_eval(xp, x, running_mean, running_var, weight, bias, eps, axes) + (None, None)
    if count == 0:  # an empty batch: an empty output, the running statistics unchanged (as PyTorch)
        y, backward = _empty_normalization(xp, x, weight, bias)
        return y, backward, (running_mean if training else None), (running_var if training else None)
    if count == 1:
        raise ValueError(f"{where}: expected more than 1 value per channel when training, got input "
                         f"shape {tuple(x.shape)}")
    if device_shaped(b) or b.fast_batch_norm():
        y, backward, mean, var = _batch_norm_fused(b, x, weight, bias, eps)
    else:
        y, backward, mean, var = _batch_norm_train(xp, x, weight, bias, eps, axes, count)
    new_mean = new_var = None
    if training and running_mean is not None:
        new_mean = _running_update(xp, running_mean, mean, momentum)
    if training and running_var is not None:
        new_var = _running_update(xp, running_var, var * (count / (count - 1)), momentum)  # unbiased
    return y, backward, new_mean, new_var


def _check_batch_norm_shapes(where: str, x: Array, *per_channel: Array | None) -> None:
    """``x`` is ``(N, C, *)`` and each given per-channel array (running statistics, affine) has ``C`` elements."""
    if x.ndim < 2:
        raise ValueError(f"{where}: expected input of shape (N, C) or (N, C, *) (at least 2-D), got shape "
                         f"{tuple(x.shape)}")
    names = ("running_mean", "running_var", "weight", "bias")
    for name, a in zip(names, per_channel, strict=True):
        if a is not None and tuple(a.shape) != (x.shape[1],):
            raise ValueError(f"{where}: expected {name} of shape ({x.shape[1]},) for input of shape "
                             f"{tuple(x.shape)} (C = dimension 1), got shape {tuple(a.shape)}")


def _empty_normalization(xp: Any, x: Array, weight: Array | None, bias: Array | None) -> tuple[Array, Backward]:
    """A normalisation of an input with no elements: an empty output; the backward gives an empty
    input gradient and zero gradients for the per-channel ``weight``/``bias`` (as PyTorch)."""

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        grads = tuple(None if p is None else xp.zeros_like(p) for p in (weight, bias))
        return (dy * 1.0 if input_grad else None), grads

    return x * 1.0, backward


def _batch_norm_train(xp: Any, x: Array, weight: Array | None, bias: Array | None, eps: float,
                      axes: tuple[int, ...], count: int) -> tuple[Array, Backward, Array, Array]:
    """Training-mode batch norm in a few whole-array passes (the CPU formulation):
    ``(y, backward, batch mean, biased batch variance)``."""
    cshape = _channel_shape(x.ndim, x.shape[1])
    mean = xp.mean(x, axis=axes)
    xc = x - xp.reshape(mean, cshape)
    var = _channel_dot(xp, xc, xc, axes) * (1.0 / count)
    invstd = 1.0 / xp.sqrt(var + eps)
    # the closure keeps xc = x - mean (xhat = xc * invstd is never materialised: y is one
    # product and one add away from xc, and backward folds invstd into its per-channel factors)
    y = xc * xp.reshape(invstd if weight is None else invstd * weight, cshape)
    if bias is not None:
        y += xp.reshape(bias, cshape)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dbias = xp.sum(dy, axis=axes)
        dweight = _channel_dot(xp, dy, xc, axes) * invstd  # sum(dy * xhat)
        dx = None
        if input_grad:
            scale = invstd if weight is None else invstd * weight
            # dx = scale*dy - xhat*(scale*dweight/n) - scale*dbias/n: two elementwise passes and one
            # temporary (the standard has no fused multiply-add or out=)
            inv_n = 1.0 / count
            dx = xc * xp.reshape(scale * invstd * (dweight * -inv_n), cshape)
            dx += dy * xp.reshape(scale, cshape)
            dx -= xp.reshape(scale * (dbias * inv_n), cshape)
        return dx, (dweight if weight is not None else None, dbias if bias is not None else None)

    return y, backward, mean, var


def _batch_norm_fused(b: Any, x: Array, weight: Array | None, bias: Array | None,
                      eps: float) -> tuple[Array, Backward, Array, Array]:
    """Training-mode batch norm on the adapter's fused kernels (the device formulation), on the
    free ``(N, C, L)`` view of ``x``: ``(y, backward, batch mean, biased batch variance)``."""
    xp = b.xp
    shape = tuple(x.shape)
    x3 = xp.reshape(x, (shape[0], shape[1], -1))
    mean, var = b.batch_norm_stats(x3)
    y3, invstd = b.batch_norm_forward(x3, mean, var, weight, bias, eps)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dx3, dweight, dbias = b.batch_norm_backward(xp.reshape(dy, x3.shape), x3, mean, invstd, weight)
        dx = xp.reshape(dx3, shape) if input_grad else None
        return dx, (dweight if weight is not None else None, dbias if bias is not None else None)

    return xp.reshape(y3, shape), backward, mean, var


def _batch_norm_eval(xp: Any, x: Array, running_mean: Array, running_var: Array, weight: Array | None,
                     bias: Array | None, eps: float, axes: tuple[int, ...]) -> tuple[Array, Backward]:
    """Batch norm with the running statistics (evaluation): an affine map per channel."""
    cshape = _channel_shape(x.ndim, x.shape[1])
    invstd = 1.0 / xp.sqrt(running_var + eps)
    xhat = (x - xp.reshape(running_mean, cshape)) * xp.reshape(invstd, cshape)
    y = xhat * xp.reshape(weight, cshape) if weight is not None else xhat * 1.0
    if bias is not None:
        y += xp.reshape(bias, cshape)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dbias = xp.sum(dy, axis=axes) if bias is not None else None
        dweight = _channel_dot(xp, dy, xhat, axes) if weight is not None else None
        dx = None
        if input_grad:
            dx = dy * xp.reshape(invstd if weight is None else invstd * weight, cshape)
        return dx, (dweight, dbias)

    return y, backward


def batch_norm_forward(x: Array, running_mean: Array | None, running_var: Array | None, weight: Array | None = None,
                       bias: Array | None = None, training: bool = False, momentum: Any = 0.1,
                       eps: float = 1e-5, *, where: str = "batch_norm") -> tuple[Array, Backward]:
    """Batch normalisation over every axis but 1 (``torch.nn.functional.batch_norm``).

    ``x`` is ``(N, C, *)``. Training: normalise with the batch mean and biased variance and, if
    given, update ``running_mean``/``running_var`` in place (``(1-momentum)*old + momentum*new``,
    the variance unbiased by ``n/(n-1)``); ``momentum`` may be a 0-d array (the cumulative
    average uses ``1/num_batches_tracked``). Evaluation: normalise with the running statistics.
    ``backward`` returns ``(dx, (dweight, dbias))`` (None for absent affine parameters).

    Updating in place needs a library with mutable arrays; on an immutable one (JAX) use
    :func:`batch_norm_running_forward`, which returns the new statistics (the layers do).

    >>> import nnx
    >>> y, back = batch_norm_forward(nnx.asarray([[1.0], [3.0]]), None, None, training=True)
    >>> nnx.to_numpy(y).round(3).tolist()
    [[-1.0], [1.0]]
    """
    b = backends.backend_of(x)
    if training and not b.mutable and (running_mean is not None or running_var is not None):
        raise ValueError(f"{where}: cannot update running_mean/running_var in place on backend {b.name!r} "
                         "(its arrays are immutable); use batch_norm_running_forward, which returns the new "
                         "statistics, or the BatchNorm layers")
    y, backward, new_mean, new_var = batch_norm_running_forward(x, running_mean, running_var, weight, bias,
                                                                training, momentum, eps, where=where)
    if new_mean is not None:
        b.at_set(running_mean, ..., new_mean)
    if new_var is not None:
        b.at_set(running_var, ..., new_var)
    return y, backward


def batch_norm(x: Array, running_mean: Array | None, running_var: Array | None, weight: Array | None = None,
               bias: Array | None = None, training: bool = False, momentum: Any = 0.1, eps: float = 1e-5) -> Array:
    """Functional form of :func:`batch_norm_forward` (as ``torch.nn.functional.batch_norm``)."""
    return batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps)[0]


def _row_mean_dot(xp: Any, a: Array, b: Array, axes: tuple[int, ...]) -> Array:
    """``mean(a * b, axis=axes, keepdims=True)``; over the last axis alone as one ``vecdot`` pass
    (the adapter's: no ``a * b`` temporary)."""
    if axes == (a.ndim - 1,):
        n = a.shape[-1]
        return xp.expand_dims(backends.backend_of(a).vecdot(a, b, axis=-1), axis=-1) * (1.0 / n)
    return xp.mean(a * b, axis=axes, keepdims=True)


def _normalize_last(xp: Any, x: Array, axes: tuple[int, ...], eps: float) -> tuple[Array, Array]:
    mean = xp.mean(x, axis=axes, keepdims=True)
    xc = x - mean
    var = _row_mean_dot(xp, xc, xc, axes)
    invstd = 1.0 / xp.sqrt(var + eps)
    xc *= invstd
    return xc, invstd


def _normalize_backward(xp: Any, dxhat: Array, xhat: Array, invstd: Array, axes: tuple[int, ...], *,
                        owned: bool = False) -> Array:
    """dx of ``xhat = (x - mean) * invstd`` (biased variance) given dL/dxhat.

    ``owned``: ``dxhat`` is a temporary of the caller, which may be overwritten (fewer passes)."""
    m1 = xp.mean(dxhat, axis=axes, keepdims=True)
    m2 = _row_mean_dot(xp, dxhat, xhat, axes)
    if not owned:
        return (dxhat - m1 - xhat * m2) * invstd
    dxhat -= m1
    dxhat -= xhat * m2
    dxhat *= invstd
    return dxhat


def _lead_dot(xp: Any, a: Array, b: Array, lead: tuple[int, ...]) -> Array:
    """``sum(a * b, axis=lead)`` over the leading axes: one ``vecdot`` down the rows of the 2-D
    ``(rows, features)`` views (no ``a * b`` temporary)."""
    if not lead:
        return a * b
    feat = tuple(a.shape[len(lead):])
    a2, b2 = xp.reshape(a, (-1, _prod(feat))), xp.reshape(b, (-1, _prod(feat)))
    return xp.reshape(backends.backend_of(a).vecdot(a2, b2, axis=0), feat)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def layer_norm_forward(x: Array, normalized_shape: Any, weight: Array | None = None, bias: Array | None = None,
                       eps: float = 1e-5, *, where: str = "layer_norm") -> tuple[Array, Backward]:
    """Layer normalisation over the trailing ``normalized_shape`` axes (``torch.nn.functional.layer_norm``).

    ``weight``/``bias`` have shape ``normalized_shape``. ``backward`` returns
    ``(dx, (dweight, dbias))``.

    >>> import nnx
    >>> y, back = layer_norm_forward(nnx.asarray([[1.0, 3.0]]), (2,))
    >>> nnx.to_numpy(y).round(3).tolist()
    [[-1.0, 1.0]]
    """
    xp = backends.backend_of(x).xp
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        trailing = ", ".join(map(str, shape))
        raise ValueError(f"{where}: expected input of shape (*, {trailing}), got shape {tuple(x.shape)}")
    if k == 1 and x.ndim >= 1:
        return _layer_norm_rows(x, weight, bias, float(eps))
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    xhat, invstd = _normalize_last(xp, x, axes, float(eps))
    y = xhat * weight if weight is not None else xhat * 1.0
    if bias is not None:
        y += bias

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dweight = _lead_dot(xp, dy, xhat, lead) if weight is not None else None
        dbias = xp.sum(dy, axis=lead) if bias is not None else None
        dx = None
        if input_grad:
            dxhat = dy * weight if weight is not None else dy
            dx = _normalize_backward(xp, dxhat, xhat, invstd, axes, owned=weight is not None)
        return dx, (dweight, dbias)

    return y, backward


def _layer_norm_rows(x: Array, weight: Array | None, bias: Array | None, eps: float) -> tuple[Array, Backward]:
    """Layer normalisation over the last axis alone (the Transformer's case): the adapter's row
    kernels on the ``(rows, features)`` view (a cache-blocked, threaded kernel on NumPy)."""
    b = backends.backend_of(x)
    xp = b.xp
    shape = tuple(x.shape)
    rows = xp.reshape(x, (_prod(shape[:-1]), shape[-1]))
    y, xhat, invstd = b.layer_norm_rows_forward(rows, weight, bias, eps)

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dx, dweight, dbias = b.layer_norm_rows_backward(xp.reshape(dy, tuple(xhat.shape)), xhat, invstd, weight,
                                                        bias is not None, input_grad)
        return (xp.reshape(dx, shape) if dx is not None else None), (dweight, dbias)

    return xp.reshape(y, shape), backward


def layer_norm(x: Array, normalized_shape: Any, weight: Array | None = None, bias: Array | None = None,
               eps: float = 1e-5) -> Array:
    """Functional form of :func:`layer_norm_forward`."""
    return layer_norm_forward(x, normalized_shape, weight, bias, eps)[0]


def group_norm_forward(x: Array, num_groups: int, weight: Array | None = None, bias: Array | None = None,
                       eps: float = 1e-5, *, where: str = "group_norm") -> tuple[Array, Backward]:
    """Group normalisation (``torch.nn.functional.group_norm``): ``x`` ``(N, C, *)``, the ``C``
    channels split into ``num_groups`` groups, each normalised over its channels and all
    spatial positions; then a per-channel affine ``weight``/``bias`` of shape ``(C,)``.

    >>> import nnx
    >>> y, back = group_norm_forward(nnx.asarray([[[1.0], [3.0]]]), 1)
    >>> nnx.to_numpy(y).round(3).tolist()
    [[[-1.0], [1.0]]]
    """
    xp = backends.backend_of(x).xp
    if x.ndim < 2 or x.shape[1] % num_groups:
        raise ValueError(f"{where}: expected input (N, C, *) with C divisible by num_groups={num_groups}, "
                         f"got shape {tuple(x.shape)}")
    if 0 in tuple(x.shape):  # an empty batch (or spatial size 0): an empty output, zero affine gradients
        return _empty_normalization(xp, x, weight, bias)
    return _grouped_affine_norm(xp, x, (x.shape[0], num_groups, -1), weight, bias, float(eps))


def _grouped_affine_norm(xp: Any, x: Array, grouped: tuple[int, ...], weight: Array | None, bias: Array | None,
                         eps: float) -> tuple[Array, Backward]:
    """Normalise each row of the ``grouped`` view ``(N, G, -1)`` of ``x`` ``(N, C, *)``, then apply the
    per-channel affine ``weight``/``bias`` ``(C,)``: the shared core of GroupNorm (``G`` groups) and
    InstanceNorm (``G = C``). Returns ``(y, backward)``."""
    shape = tuple(x.shape)
    cshape = _channel_shape(x.ndim, shape[1])
    xhat_g, invstd = _normalize_last(xp, xp.reshape(x, grouped), (2,), eps)
    xhat = xp.reshape(xhat_g, shape)
    y = xhat * xp.reshape(weight, cshape) if weight is not None else xhat * 1.0
    if bias is not None:
        y += xp.reshape(bias, cshape)
    red = (0,) + tuple(range(2, x.ndim))

    def backward(dy: Array, input_grad: bool = True) -> tuple[Array | None, tuple]:
        dweight = xp.sum(dy * xhat, axis=red) if weight is not None else None
        dbias = xp.sum(dy, axis=red) if bias is not None else None
        dx = None
        if input_grad:
            dxhat = dy * xp.reshape(weight, cshape) if weight is not None else dy
            dxg = _normalize_backward(xp, xp.reshape(dxhat, grouped), xhat_g, invstd, (2,), owned=weight is not None)
            dx = xp.reshape(dxg, shape)
        return dx, (dweight, dbias)

    return y, backward


def group_norm(x: Array, num_groups: int, weight: Array | None = None, bias: Array | None = None,
               eps: float = 1e-5) -> Array:
    """Functional form of :func:`group_norm_forward`."""
    return group_norm_forward(x, num_groups, weight, bias, eps)[0]
