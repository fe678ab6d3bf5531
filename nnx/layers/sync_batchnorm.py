"""SyncBatchNorm: batch normalisation whose batch statistics span all ranks (``torch.nn.SyncBatchNorm``)."""
from __future__ import annotations

from typing import Any

import nnx_backends as backends

from .. import distributed as dist
from ..module import Module
from . import BatchNorm1d, BatchNorm2d

__all__ = ["SyncBatchNorm"]


def _sum_over_ranks(xp: Any, parts: list[Any]) -> list[Any]:
    """All-reduce (sum) several per-channel vectors in one message."""
    if dist.get_world_size() == 1:
        return parts
    c = parts[0].shape[0]
    flat = dist.all_reduce(xp.concat(parts), "sum")
    return [flat[i * c:(i + 1) * c] for i in range(len(parts))]


class SyncBatchNorm(BatchNorm2d):
    """Batch normalisation over ``(N, C, *)`` inputs with statistics of the global batch.

    Same arguments, parameters and buffers as :class:`~nnx.BatchNorm2d` (inputs of 2 to 5
    dimensions). In training each forward all-reduces the per-channel sums (mean, then squared
    deviations) and each backward the two per-channel sums of the input-gradient formula, so the
    result equals :class:`~nnx.BatchNorm2d` on the concatenation of all ranks' batches. Outside
    training, or in a world of size 1, it is exactly BatchNorm. Parameter gradients stay local (the
    :class:`~nnx.parallel.DistributedDataParallel` wrapper averages them).

    >>> model = nnx.Sequential(nnx.Conv2d(1, 4, 3), nnx.BatchNorm2d(4), nnx.ReLU())
    >>> model = nnx.SyncBatchNorm.convert_sync_batchnorm(model)   # every BatchNorm*d replaced
    >>> type(model[1]).__name__
    'SyncBatchNorm'
    """

    _ndims = (2, 3, 4, 5)
    _layout = "(N, C, *)"

    def forward(self, input: Any) -> Any:
        x = input  # PyTorch's argument name (m(input=t) works)
        if not self.training or dist.get_world_size() == 1:
            return super().forward(x)
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm({self.num_features}): expected input (N, C, *) with C="
                             f"{self.num_features} and 2 to 5 dimensions, got shape {tuple(x.shape)}")
        xp = backends.backend_of(x).xp
        axes = (0, *range(2, x.ndim))
        bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        local_n = 1
        for a in axes:
            local_n *= x.shape[a]
        count = dist.all_reduce_scalars({"n": float(local_n)}, "sum")["n"]
        (s,) = _sum_over_ranks(xp, [xp.sum(x, axis=axes)])
        mean = s / count
        xc = x - xp.reshape(mean, bshape)
        (ss,) = _sum_over_ranks(xp, [xp.sum(xc * xc, axis=axes)])
        var = ss / count
        invstd = 1.0 / xp.sqrt(var + self.eps)
        xhat = xc * xp.reshape(invstd, bshape)
        w = self.weight.data if self.weight is not None else None
        b = self.bias.data if self.bias is not None else None
        y = xhat
        if w is not None:
            y = y * xp.reshape(w, bshape)
        if b is not None:
            y = y + xp.reshape(b, bshape)
        self._update_running(xp, mean, var, count)

        def backward(dy: Any, input_grad: bool) -> tuple[Any, tuple[Any, Any]]:
            gw = xp.sum(dy * xhat, axis=axes) if w is not None else None
            gb = xp.sum(dy, axis=axes) if b is not None else None
            dx = None
            if input_grad:
                dxhat = dy * xp.reshape(w, bshape) if w is not None else dy
                s1, s2 = _sum_over_ranks(xp, [xp.sum(dxhat, axis=axes), xp.sum(dxhat * xhat, axis=axes)])
                dx = (dxhat - xp.reshape(s1 / count, bshape) - xhat * xp.reshape(s2 / count, bshape)) \
                    * xp.reshape(invstd, bshape)
            return dx, (gw, gb)

        return self.record(y, backward, params=("weight", "bias"))

    def _update_running(self, xp: Any, mean: Any, var: Any, count: float) -> None:
        if not self.track_running_stats:
            return
        self.num_batches_tracked = self.num_batches_tracked + 1
        if self.momentum is None:
            m: Any = 1.0 / xp.astype(self.num_batches_tracked, mean.dtype)
        else:
            m = self.momentum
        unbiased = var * (count / max(count - 1.0, 1.0))
        self.running_mean = (1 - m) * self.running_mean + m * mean
        self.running_var = (1 - m) * self.running_var + m * unbiased

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """Return ``module`` with every BatchNorm1d/2d replaced by a SyncBatchNorm sharing its
        parameters and buffers (``module`` itself when it is a BatchNorm). ``process_group`` is
        accepted for PyTorch compatibility and must be None."""
        if process_group is not None:
            raise ValueError("SyncBatchNorm.convert_sync_batchnorm: process groups are not supported; "
                             "pass process_group=None")
        if isinstance(module, (BatchNorm1d, BatchNorm2d)) and not isinstance(module, SyncBatchNorm):
            new = cls.__new__(cls)
            Module.__init__(new)
            for k, v in module.__dict__.items():
                if k not in ("_parameters", "_buffers", "_modules", "_tape", "_forward_hooks"):
                    object.__setattr__(new, k, v)
            for k, p in module._parameters.items():
                new.register_parameter(k, p)
            for k, buf in module._buffers.items():
                new.register_buffer(k, buf)
            new.train(module.training)
            return new
        for name, child in list(module._modules.items()):
            if child is not None:
                module.add_module(name, cls.convert_sync_batchnorm(child))
        return module
