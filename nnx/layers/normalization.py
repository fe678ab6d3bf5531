"""Normalisation layers: BatchNorm1d, BatchNorm2d, LayerNorm, GroupNorm, InstanceNorm1d, InstanceNorm2d, RMSNorm.

Names, arguments, parameters, buffers and state_dict keys follow ``torch.nn``. A layer checks
its hyper-parameters when built and, at each call, that the input lives with its parameters, has
their dtype, its rank and its channel count; the functional op (:mod:`nnx.functional.normalization`)
checks the rest with errors that name the layer.
"""

from __future__ import annotations

import warnings
from typing import Any

import nnx_backends as backends

from .. import functional as F
from .. import init
from ..errors import check_positive_int
from ..functional._validation import check_array_input, check_input, rank_error
from ..functional.normalization_extra import normalized_shape_tuple
from ..module import Module, Parameter
from ._parameters import backend_for, full

__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "LayerNorm", "RMSNorm"]


def _check_channels(where: str, x: Any, ref: Any, ndims: tuple[int, ...], layout: str, channels: int) -> None:
    """The input checks of a per-channel layer (run only when its fast test fails): an array of
    the parameters' library and dtype (when it has parameters, ``ref``), of a rank in ``ndims``,
    with ``channels`` channels."""
    if ref is not None:
        check_input(where, x, ref)
    else:
        check_array_input(where, x)
    if x.ndim not in ndims:
        raise rank_error(where, x, ndims, layout)
    if x.shape[1] != channels:
        raise ValueError(f"{where}: expected input with {channels} channels (dimension 1), "
                         f"got shape {tuple(x.shape)}")



# ============================================================================ normalisation
def _register_affine(module: Module, shape: tuple[int, ...], affine: bool, bias: bool, dtype: Any, backend: Any,
                     device: Any) -> None:
    """The normalisation layers' ``weight`` (ones) and ``bias`` (zeros) of ``shape``, or None for each absent one."""
    module.register_parameter("weight", Parameter(full(shape, 1.0, dtype, backend, device)) if affine else None)
    module.register_parameter("bias", Parameter(full(shape, 0.0, dtype, backend, device)) if affine and bias
                              else None)


def _reset_affine(module: Module) -> None:
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class _BatchNorm(Module):
    _ndims: tuple[int, ...] = (4,)
    _layout = "(N, C, H, W)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, dtype: Any = None, backend: Any = None,
                 device: Any = None, bias: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_positive_int(name, "num_features", num_features)
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                     or not 0.0 <= momentum <= 1.0):
            raise ValueError(f"{name}: momentum must be a number in [0, 1] or None, got {momentum!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
            raise ValueError(f"{name}: eps must be a non-negative number, got {eps!r}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        _register_affine(self, (num_features,), affine, bias, dtype, backend, device)
        if track_running_stats:
            self.register_buffer("running_mean", full((num_features,), 0.0, dtype, backend, device))
            self.register_buffer("running_var", full((num_features,), 1.0, dtype, backend, device))
            b, _ = backend_for(dtype, backend, device)
            self.register_buffer("num_batches_tracked", b.xp.asarray(0, dtype=b.xp.int64, device=b.device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches counted."""
        if self.track_running_stats:
            xp = backends.backend_of(self.running_mean).xp
            self.running_mean = xp.zeros_like(self.running_mean)
            self.running_var = xp.ones_like(self.running_var)
            self.num_batches_tracked = xp.zeros_like(self.num_batches_tracked)

    def reset_parameters(self) -> None:
        """Running statistics reset; weight 1, bias 0."""
        self.reset_running_stats()
        _reset_affine(self)

    def _ref(self) -> Any:
        if self.weight is not None:
            return self.weight.data
        return self.running_mean

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"{type(self).__name__}({self.extra_repr()})"
        ref = self._ref()
        if ref is None or type(x) is not type(ref) or x.dtype != ref.dtype or x.ndim not in self._ndims \
                or x.shape[1] != self.num_features:
            _check_channels(where, x, ref, self._ndims, self._layout, self.num_features)
        training = self.training
        momentum: Any = 0.0 if self.momentum is None else self.momentum
        tracked = None
        if training and self.track_running_stats:
            tracked = self.num_batches_tracked + 1  # stored once the op has succeeded
            if self.momentum is None:  # cumulative moving average, on the device (no host read)
                xp = backends.backend_of(self.running_mean).xp
                momentum = 1.0 / xp.astype(tracked, self.running_mean.dtype)
        w = self.weight.data if self.weight is not None else None
        b = self.bias.data if self.bias is not None else None
        rm = self.running_mean if self.track_running_stats else None
        rv = self.running_var if self.track_running_stats else None
        use_batch = training or not self.track_running_stats
        y, backward, new_mean, new_var = F.batch_norm_running_forward(x, rm, rv, w, b, use_batch, momentum,
                                                                      self.eps, where=where)
        if tracked is not None:  # the kernel returns the new statistics; the layer stores them
            self.running_mean, self.running_var, self.num_batches_tracked = new_mean, new_var, tracked
        return self.record(y, backward, params=("weight", "bias"))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of NCHW images per channel (``torch.nn.BatchNorm2d``).

    Args: ``num_features`` (C), ``eps=1e-5``, ``momentum=0.1`` (``None``: cumulative average
    over all batches seen), ``affine=True`` (learn ``weight``/``bias`` of shape ``(C,)``; ``bias=False``
    keeps only the weight, as PyTorch 2.13),
    ``track_running_stats=True`` (buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked``; the running variance is unbiased, as PyTorch).

    Training uses batch statistics and updates the running ones; eval mode uses the running
    statistics (or batch statistics when they are not tracked).

    >>> import nnx
    >>> bn = nnx.BatchNorm2d(2)
    >>> y = bn(nnx.asarray([[[[1.0, 3.0]], [[2.0, 2.0]]]]))
    >>> nnx.to_numpy(y).round(3).tolist(), int(bn.num_batches_tracked)
    ([[[[-1.0, 1.0]], [[0.0, 0.0]]]], 1)
    """

    _ndims = (4,)
    _layout = "(N, C, H, W)"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs per channel (``torch.nn.BatchNorm1d``).

    Same arguments and buffers as :class:`BatchNorm2d`.

    >>> import nnx
    >>> bn = nnx.BatchNorm1d(3).eval()          # eval: running statistics (mean 0, variance 1)
    >>> tuple(bn(nnx.asarray([[1.0, 2.0, 3.0]])).shape)
    (1, 3)
    """

    _ndims = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes (``torch.nn.LayerNorm``).

    Args: ``normalized_shape`` (int or tuple), ``eps=1e-5``, ``elementwise_affine=True``
    (learn ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape``), ``bias=True``.

    >>> import nnx
    >>> ln = nnx.LayerNorm(2)
    >>> nnx.to_numpy(ln(nnx.asarray([[1.0, 3.0]]))).round(3).tolist()
    [[-1.0, 1.0]]
    """

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 *, dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool) \
            else tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else None
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive integer or a tuple of positive "
                             f"integers, got {normalized_shape!r}")
        self.normalized_shape = shape
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        _register_affine(self, shape, elementwise_affine, bias, dtype, backend, device)

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        _reset_affine(self)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"LayerNorm({self.extra_repr()})"
        w = self.weight.data if self.weight is not None else None
        if w is None:
            check_array_input(where, x)
        elif type(x) is not type(w) or x.dtype != w.dtype:
            check_input(where, x, w)
        b = self.bias.data if self.bias is not None else None
        y, backward = F.layer_norm_forward(x, self.normalized_shape, w, b, self.eps, where=where)
        return self.record(y, backward, params=("weight", "bias"))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Group normalisation (``torch.nn.GroupNorm``): channels in ``num_groups`` groups, each
    normalised over its channels and spatial positions, then a per-channel affine transform.

    Args: ``num_groups``, ``num_channels`` (divisible by ``num_groups``), ``eps=1e-5``,
    ``affine=True`` (``weight`` ones, ``bias`` zeros, shape ``(num_channels,)``; ``bias=False`` drops the bias).
    Input ``(N, C, *)``.

    >>> import nnx
    >>> gn = nnx.GroupNorm(1, 2)
    >>> nnx.to_numpy(gn(nnx.asarray([[[1.0], [3.0]]]))).round(3).tolist()
    [[[-1.0], [1.0]]]
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 dtype: Any = None, backend: Any = None, device: Any = None, bias: bool = True) -> None:
        super().__init__()
        self.num_groups = check_positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = check_positive_int("GroupNorm", "num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels must be divisible by num_groups, got num_channels="
                             f"{num_channels}, num_groups={num_groups}")
        self.eps = float(eps)
        self.affine = bool(affine)
        _register_affine(self, (num_channels,), affine, bias, dtype, backend, device)

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        _reset_affine(self)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"GroupNorm({self.extra_repr()})"
        w = self.weight.data if self.weight is not None else None
        if w is None or type(x) is not type(w) or x.dtype != w.dtype or x.ndim < 2 or x.shape[1] != self.num_channels:
            _check_channels(where, x, w, tuple(range(2, 10)), "(N, C, *)", self.num_channels)
        b = self.bias.data if self.bias is not None else None
        y, backward = F.group_norm_forward(x, self.num_groups, w, b, self.eps, where=where)
        return self.record(y, backward, params=("weight", "bias"))

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(_BatchNorm):
    _batched = 3
    _layout = "(N, C, L)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, *, dtype: Any = None, backend: Any = None,
                 device: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype, backend=backend,
                         device=device)

    def _check(self, where: str, x: Any, ref: Any) -> None:
        if ref is not None:
            check_input(where, x, ref)
        else:
            check_array_input(where, x)
        if x.ndim not in (self._batched - 1, self._batched):
            raise rank_error(where, x, (self._batched - 1, self._batched), self._layout)

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        where = f"{type(self).__name__}({self.extra_repr()})"
        ref = self._ref()
        if ref is None or type(x) is not type(ref) or x.dtype != ref.dtype or x.ndim != self._batched:
            self._check(where, x, ref)
        xp = backends.backend_of(x).xp
        unbatched = x.ndim == self._batched - 1
        if unbatched:
            x = xp.expand_dims(x, axis=0)
        if x.shape[1] != self.num_features:
            message = (f"{where}: expected input with {self.num_features} channels (dimension "
                       f"{0 if unbatched else 1}), got shape {tuple(x.shape[1:] if unbatched else x.shape)}")
            if self.affine or self.track_running_stats:
                raise ValueError(message)
            warnings.warn(message + "; normalising each channel anyway (as PyTorch)", stacklevel=2)
        w = self.weight.data if self.weight is not None else None
        b = self.bias.data if self.bias is not None else None
        use_input_stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum  # PyTorch passes 0 for None
        y, backward, new_mean, new_var = F.instance_norm_running_forward(
            x, self.running_mean, self.running_var, w, b, use_input_stats, momentum, self.eps, where=where)
        if new_mean is not None:
            self.running_mean, self.running_var = new_mean, new_var
        if unbatched:
            y = y[0, ...]
            batched_backward = backward

            def backward(dy: Any, input_grad: bool = True) -> tuple[Any, tuple]:
                dx, grads = batched_backward(xp.expand_dims(dy, axis=0), input_grad)
                return (dx[0, ...] if dx is not None else None), grads

        return self.record(y, backward, params=("weight", "bias"))


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of ``(N, C, L)`` (or unbatched ``(C, L)``) inputs (``torch.nn.InstanceNorm1d``).

    Each ``(sample, channel)`` is normalised over its ``L`` positions. Args as PyTorch:
    ``num_features`` (C), ``eps=1e-5``, ``momentum=0.1``, ``affine=False`` (learn ``weight``/``bias``
    of shape ``(C,)``), ``track_running_stats=False`` (buffers ``running_mean``, ``running_var``,
    ``num_batches_tracked``: updated in training with the batch average of the instance statistics,
    used in eval mode). A channel count other than ``num_features`` is an error with affine
    parameters or running statistics and a warning otherwise (as PyTorch).

    >>> import nnx
    >>> nnx.to_numpy(nnx.InstanceNorm1d(1)(nnx.asarray([[[1.0, 3.0]]]))).round(3).tolist()
    [[[-1.0, 1.0]]]
    """

    _batched = 3
    _layout = "(N, C, L) or (C, L)"


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of NCHW (or unbatched ``(C, H, W)``) images (``torch.nn.InstanceNorm2d``).

    Each ``(sample, channel)`` is normalised over its ``H*W`` positions; arguments as
    :class:`InstanceNorm1d`.

    >>> import nnx
    >>> nnx.to_numpy(nnx.InstanceNorm2d(1)(nnx.asarray([[[[1.0], [3.0]]]]))).round(3).tolist()
    [[[[-1.0], [1.0]]]]
    """

    _batched = 4
    _layout = "(N, C, H, W) or (C, H, W)"


class RMSNorm(Module):
    """Root-mean-square normalisation over the trailing ``normalized_shape`` axes (``torch.nn.RMSNorm``).

    ``y = x / sqrt(mean(x**2) + eps) * weight``. Args: ``normalized_shape`` (int or tuple),
    ``eps=None`` (the input dtype's machine epsilon, as PyTorch), ``elementwise_affine=True``
    (learn ``weight``, ones of shape ``normalized_shape``; no bias).

    >>> import nnx
    >>> nnx.to_numpy(nnx.RMSNorm(2, eps=0.0)(nnx.asarray([[3.0, -3.0]]))).tolist()
    [[1.0, -1.0]]
    """

    def __init__(self, normalized_shape: Any, eps: float | None = None, elementwise_affine: bool = True, *,
                 dtype: Any = None, backend: Any = None, device: Any = None) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape_tuple("RMSNorm", normalized_shape)
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0):
            raise ValueError(f"RMSNorm: eps must be a non-negative number or None, got {eps!r}")
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.register_parameter("weight", Parameter(full(self.normalized_shape, 1.0, dtype, backend, device))
                                if elementwise_affine else None)

    def reset_parameters(self) -> None:
        """Weight 1."""
        if self.weight is not None:
            init.ones_(self.weight)

    def forward(self, x: Any) -> Any:
        where = f"RMSNorm({self.extra_repr()})"
        w = self.weight.data if self.weight is not None else None
        if w is None:
            check_array_input(where, x)
        elif type(x) is not type(w) or x.dtype != w.dtype:
            check_input(where, x, w)
        y, backward = F.rms_norm_forward(x, self.normalized_shape, w, self.eps, where=where)
        return self.record(y, backward, params=("weight",))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
