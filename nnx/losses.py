"""Loss modules (``torch.nn`` names and arguments) with an explicit ``backward``.

>>> import nnx
>>> loss_fn = nnx.CrossEntropyLoss()
>>> logits, labels = nnx.asarray([[2.0, 0.0], [0.0, 2.0]]), nnx.asarray([0, 1])
>>> loss = loss_fn(logits, labels)           # 0-d array on the backend
>>> dlogits = loss_fn.backward()             # dloss/dlogits, same shape as logits
>>> tuple(dlogits.shape)
(2, 2)

A loss remembers its most recent call (while gradient recording is on); ``backward`` uses it
once. ``backward(grad)`` takes the upstream gradient (default 1), which must have the loss's
shape: a scalar, or the per-element shape with ``reduction="none"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnx_backends as backends

from . import functional as F
from .errors import NotRecordedError, check_floating, check_same_backend
from .grad_mode import is_grad_enabled
from .module import Module

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._last: tuple[Callable, Any] | None = None

    def _check(self, input: Any, target: Any, same_shape: bool) -> None:
        where = type(self).__name__
        check_same_backend(where, target, input, "target", "the input")
        check_floating(where, input, None, "input")
        if same_shape and tuple(input.shape) != tuple(target.shape):
            raise ValueError(
                f"{where}: input has shape {tuple(input.shape)} but target has shape {tuple(target.shape)}; "
                "they must match (reshape one: a (N, 1) versus (N,) mismatch would broadcast to (N, N))"
            )

    def _finish(self, loss: Any, backward: Callable) -> Any:
        self._last = (backward, loss) if is_grad_enabled() else None
        return loss

    def backward(self, grad_output: Any = None, *, input_grad: bool = True) -> Any:
        """dloss/dinput of the most recent call, times ``grad_output`` (default 1)."""
        if self._last is None:
            raise NotRecordedError(
                f"{type(self).__name__}.backward: no recorded call; compute the loss first "
                "(outside nnx.no_grad()), then call backward once"
            )
        backward, loss = self._last
        self._last = None
        if grad_output is None:
            b = backends.backend_of(loss)
            grad_output = b.xp.ones(tuple(loss.shape), dtype=loss.dtype, device=b.device_of(loss))
        elif tuple(getattr(grad_output, "shape", ())) != tuple(loss.shape) and hasattr(grad_output, "shape"):
            raise ValueError(f"{type(self).__name__}.backward: grad_output has shape "
                             f"{tuple(grad_output.shape)} but the loss has shape {tuple(loss.shape)}")
        return backward(grad_output, True)[0]

    def clear_tape(self) -> None:
        super().clear_tape()
        self._last = None

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class MSELoss(_Loss):
    """Mean squared error."""

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, True)
        return self._finish(*F.mse_loss_forward(input, target, self.reduction))


class L1Loss(_Loss):
    """Mean absolute error."""

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, True)
        return self._finish(*F.l1_loss_forward(input, target, self.reduction))


class HuberLoss(_Loss):
    """Quadratic for ``|d| < delta``, linear beyond (``torch.nn.HuberLoss``)."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, True)
        return self._finish(*F.huber_loss_forward(input, target, self.reduction, self.delta))


class SmoothL1Loss(_Loss):
    """Huber loss divided by ``beta`` (``torch.nn.SmoothL1Loss``)."""

    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, True)
        return self._finish(*F.smooth_l1_loss_forward(input, target, self.reduction, self.beta))


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits against class indices or class probabilities.

    Args:
        weight: per-class weights ``(C,)``.
        ignore_index: class-index targets equal to it are skipped (default -100).
        reduction: ``"mean"`` (over the summed weights of counted targets), ``"sum"``, ``"none"``.
        label_smoothing: in [0, 1].

    Shapes: input ``(N, C)`` or ``(N, C, d1, ...)``; target ``(N,)``/``(N, d1, ...)`` integers,
    or floats of the input's shape.
    """

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, False)
        if input.ndim >= 2 and backends.backend_of(target).isdtype(target.dtype, "integral") \
                and tuple(target.shape) != tuple(input.shape[:1]) + tuple(input.shape[2:]):
            want = tuple(input.shape[:1]) + tuple(input.shape[2:])
            raise ValueError(
                f"CrossEntropyLoss: class-index target must have shape {want} "
                f"for input of shape {tuple(input.shape)}, got {tuple(target.shape)}"
            )
        return self._finish(*F.cross_entropy_forward(input, target, self.weight, self.ignore_index,
                                                     self.reduction, self.label_smoothing))


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (pair with ``LogSoftmax``)."""

    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight)

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, False)
        return self._finish(*F.nll_loss_forward(input, target, self.weight, self.ignore_index, self.reduction))


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities in [0, 1] (prefer ``BCEWithLogitsLoss``)."""

    def __init__(self, weight: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, True)
        return self._finish(*F.binary_cross_entropy_forward(input, target, self.weight, self.reduction))


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of ``sigmoid(input)``, stable for any logit; optional ``pos_weight``."""

    def __init__(self, weight: Any = None, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, True)
        return self._finish(*F.binary_cross_entropy_with_logits_forward(
            input, target, self.weight, self.reduction, self.pos_weight))


# ----------------------------------------------------------------------------- more losses (breadth)
class _MultiInputLoss(_Loss):
    """A loss of several differentiable inputs: ``backward`` returns a tuple, one gradient per input."""

    def _check_all(self, *arrays: Any) -> None:
        where = type(self).__name__
        for i, a in enumerate(arrays[1:], start=2):
            check_same_backend(where, a, arrays[0], f"input {i}", "input 1")
        check_floating(where, arrays[0], None, "input 1")


class KLDivLoss(_Loss):
    """Kullback-Leibler divergence ``target * (log target - input)`` of log-probabilities ``input``.

    Args:
        reduction: ``"mean"`` (over all elements, PyTorch's default), ``"batchmean"`` (sum / batch
            size: the true KL divergence), ``"sum"`` or ``"none"``.
        log_target: the target is given as log-probabilities too.

    >>> loss_fn = nnx.KLDivLoss(reduction="batchmean")
    >>> logp = nnx.functional.log_softmax(nnx.asarray([[1.0, 2.0, 0.5]]), dim=1)
    >>> loss = loss_fn(logp, nnx.asarray([[0.2, 0.5, 0.3]])); dinput = loss_fn.backward()
    >>> round(float(loss), 4), tuple(dinput.shape)
    (0.0847, (1, 3))
    """

    def __init__(self, reduction: str = "mean", log_target: bool = False) -> None:
        if reduction not in ("mean", "batchmean", "sum", "none"):
            raise ValueError(f"KLDivLoss: reduction must be 'mean', 'batchmean', 'sum' or 'none', got {reduction!r}")
        super().__init__("mean")
        self.reduction, self.log_target = reduction, log_target

    def forward(self, input: Any, target: Any) -> Any:
        self._check(input, target, True)
        return self._finish(*F.kl_div_forward(input, target, self.reduction, self.log_target))


class PoissonNLLLoss(_Loss):
    """Poisson negative log-likelihood (``torch.nn.PoissonNLLLoss``): ``exp(input) - target * input``
    with ``log_input=True``; ``full=True`` adds Stirling's approximation term."""

    def __init__(self, log_input: bool = True, full: bool = False, eps: float = 1e-8,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.log_input, self.full, self.eps = log_input, full, eps

    def forward(self, log_input: Any, target: Any) -> Any:
        self._check(log_input, target, True)
        return self._finish(*F.poisson_nll_loss_forward(log_input, target, self.log_input, self.full, self.eps,
                                                        self.reduction))


class GaussianNLLLoss(_MultiInputLoss):
    """Gaussian negative log-likelihood of ``target`` under ``N(input, var)`` (``torch.nn.GaussianNLLLoss``).

    ``forward(input, target, var)``; ``var`` has the input's shape, or that shape with the last
    dimension 1 (one variance per sample), or without it. ``backward()`` returns a tuple
    ``(d_input, d_target, d_var)``.
    """

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.full, self.eps = full, eps

    def forward(self, input: Any, target: Any, var: Any) -> Any:
        self._check_all(input, target, var)
        return self._finish(*F.gaussian_nll_loss_forward(input, target, var, self.full, self.eps, self.reduction))


class MarginRankingLoss(_MultiInputLoss):
    """``max(0, -target * (input1 - input2) + margin)``, target in {1, -1} (``torch.nn.MarginRankingLoss``).

    ``backward()`` returns a tuple ``(d_input1, d_input2)``.

    >>> loss_fn = nnx.MarginRankingLoss(margin=0.5)
    >>> s1, s2, y = nnx.asarray([2.0, 0.0]), nnx.asarray([1.0, 1.0]), nnx.asarray([1.0, 1.0])
    >>> loss = loss_fn(s1, s2, y); ds1, ds2 = loss_fn.backward()   # max(0, -y (s1 - s2) + margin)
    >>> float(loss), nnx.to_numpy(ds1).tolist()
    (0.75, [0.0, -0.5])
    """

    def __init__(self, margin: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = margin

    def forward(self, input1: Any, input2: Any, target: Any) -> Any:
        self._check_all(input1, input2, target)
        return self._finish(*F.margin_ranking_loss_forward(input1, input2, target, self.margin, self.reduction))


class CosineEmbeddingLoss(_MultiInputLoss):
    """``1 - cos(x1, x2)`` for target 1, ``max(0, cos(x1, x2) - margin)`` for target -1
    (``torch.nn.CosineEmbeddingLoss``). Inputs ``(N, D)``, target ``(N,)``.
    ``backward()`` returns a tuple ``(d_input1, d_input2)``."""

    def __init__(self, margin: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = margin

    def forward(self, input1: Any, input2: Any, target: Any) -> Any:
        self._check_all(input1, input2, target)
        return self._finish(*F.cosine_embedding_loss_forward(input1, input2, target, self.margin, self.reduction))


class TripletMarginLoss(_MultiInputLoss):
    """``max(d(a, p) - d(a, n) + margin, 0)`` with the p-norm distance (``torch.nn.TripletMarginLoss``).
    ``backward()`` returns a tuple ``(d_anchor, d_positive, d_negative)``."""

    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap

    def forward(self, anchor: Any, positive: Any, negative: Any) -> Any:
        self._check_all(anchor, positive, negative)
        return self._finish(*F.triplet_margin_loss_forward(anchor, positive, negative, self.margin, self.p,
                                                           self.eps, self.swap, self.reduction))
