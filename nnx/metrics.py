"""Streaming metrics that accumulate on the device and are read to the host once per log step.

A metric is updated with each batch's model output and target (``update``: only device ops, no
synchronisation) and read with ``compute()`` (one host read of a few numbers), which
:func:`nnx.fit` does every ``log_every`` batches and at the end of each epoch (rule 4 of the
design: no ``float()`` of a device array per batch).

>>> acc = nnx.metrics.Accuracy()
>>> for logits, labels in [([[2.0, 0.1], [0.3, 1.0]], [0, 1]), ([[0.9, 0.2]], [1])]:   # batches
...     acc.update(nnx.asarray(logits), nnx.asarray(labels))
>>> round(acc.compute(), 4)                     # one read, a Python float
0.6667

Metrics: :class:`Accuracy` (multi-class from logits/probabilities, or binary with a threshold),
:class:`TopKAccuracy`, :class:`MeanAbsoluteError`, :class:`F1Score` (``average="macro"`` for
multi-class, ``"binary"``), and :class:`Mean` (a running mean, used for the loss).
"""

from __future__ import annotations

from typing import Any

import nnx_backends as backends

from .backend import to_numpy
from .errors import is_floating

__all__ = ["Accuracy", "F1Score", "Mean", "MeanAbsoluteError", "Metric", "TopKAccuracy", "get_metric"]


def _read(x: Any) -> list[float]:
    """One host read of a device array, as a flat list of Python numbers."""
    return to_numpy(x).reshape(-1).tolist()


class Metric:
    """Base class: ``reset()``, ``update(output, target)`` (device only), ``compute() -> float``."""

    name: str = "metric"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        raise NotImplementedError

    def update(self, output: Any, target: Any) -> None:
        """Accumulate one batch (device arrays; no host synchronisation)."""
        raise NotImplementedError

    def compute(self) -> float:
        """The metric over everything accumulated since ``reset`` (reads the device once)."""
        raise NotImplementedError

    def __call__(self, output: Any, target: Any) -> float:
        """The metric of one batch: ``reset(); update(output, target); compute()``."""
        self.reset()
        self.update(output, target)
        return self.compute()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _xp(x: Any) -> tuple[backends.Backend, Any]:
    b = backends.backend_of(x)
    return b, b.xp


def _check_pair(where: str, output: Any, target: Any) -> None:
    if not hasattr(output, "shape") or not hasattr(target, "shape"):
        raise TypeError(f"{where}: expected arrays, got {type(output).__name__} and {type(target).__name__}")
    if type(output) is not type(target):
        raise TypeError(f"{where}: output and target live on different backends "
                        f"({type(output).__name__} vs {type(target).__name__}); use nnx.asarray(target)")


def _count(xp: Any, mask: Any) -> Any:
    return xp.sum(xp.astype(mask, xp.int64))


def _binary_pred(xp: Any, output: Any, threshold: float) -> Any:
    if output.ndim >= 2 and output.shape[1] == 1:
        output = xp.reshape(output, (output.shape[0],) + tuple(output.shape[2:]))
    return output > threshold


class Accuracy(Metric):
    """Fraction of correct predictions.

    Multi-class: ``output`` is ``(N, C, ...)`` scores (logits or probabilities) and ``target``
    ``(N, ...)`` class indices; the prediction is the arg-max over dimension 1. Binary: ``output``
    is ``(N,)`` or ``(N, 1)`` and the prediction is ``output > threshold`` (0.0 for logits; pass
    0.5 for probabilities).
    """

    name = "accuracy"

    def __init__(self, threshold: float = 0.0, name: str | None = None) -> None:
        self.threshold = float(threshold)
        super().__init__(name)

    def reset(self) -> None:
        self.correct: Any = None
        self.total = 0

    def update(self, output: Any, target: Any) -> None:
        _check_pair("Accuracy", output, target)
        b, xp = _xp(output)
        if output.ndim == target.ndim + 1 and output.shape[1] > 1:
            pred = xp.argmax(output, axis=1)
            hit = pred == xp.astype(target, pred.dtype)
        else:
            pred = _binary_pred(xp, output, self.threshold)
            t = xp.reshape(target, tuple(pred.shape))
            hit = pred == (t > 0.5 if is_floating(t) else t != 0)
        n = _count(xp, hit)
        self.correct = n if self.correct is None else self.correct + n
        size = 1
        for s in hit.shape:
            size *= s
        self.total += size

    def compute(self) -> float:
        if self.total == 0:
            return float("nan")
        return _read(self.correct)[0] / self.total


class TopKAccuracy(Metric):
    """Fraction of samples whose true class is among the ``k`` highest scores (``output (N, C)``).

    Ties count in the sample's favour (a true score equal to the k-th is a hit).
    """

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"TopKAccuracy: k must be a positive integer, got {k!r}")
        self.k = k
        self.name = f"top{k}_accuracy"
        super().__init__(name)

    def reset(self) -> None:
        self.correct: Any = None
        self.total = 0

    def update(self, output: Any, target: Any) -> None:
        _check_pair("TopKAccuracy", output, target)
        if output.ndim != 2 or target.ndim != 1 or output.shape[0] != target.shape[0]:
            raise ValueError(f"TopKAccuracy: expected output (N, C) and target (N,), got {tuple(output.shape)} "
                             f"and {tuple(target.shape)}")
        b, xp = _xp(output)
        classes = xp.arange(output.shape[1], dtype=target.dtype, device=b.device_of(output))
        onehot = target[:, None] == classes[None, :]
        true_score = xp.sum(xp.where(onehot, output, xp.zeros_like(output)), axis=1)
        rank = _count_rows(xp, output > true_score[:, None])
        n = _count(xp, rank < self.k)
        self.correct = n if self.correct is None else self.correct + n
        self.total += int(output.shape[0])

    def compute(self) -> float:
        if self.total == 0:
            return float("nan")
        return _read(self.correct)[0] / self.total


def _count_rows(xp: Any, mask: Any) -> Any:
    return xp.sum(xp.astype(mask, xp.int64), axis=1)


class MeanAbsoluteError(Metric):
    """Mean of ``|output - target|`` over all elements (``(N, 1)`` versus ``(N,)`` is accepted)."""

    name = "mae"

    def reset(self) -> None:
        self.sum: Any = None
        self.total = 0

    def update(self, output: Any, target: Any) -> None:
        _check_pair("MeanAbsoluteError", output, target)
        b, xp = _xp(output)
        if tuple(output.shape) != tuple(target.shape):
            size_o = 1
            for s in output.shape:
                size_o *= s
            size_t = 1
            for s in target.shape:
                size_t *= s
            if size_o != size_t:
                raise ValueError(f"MeanAbsoluteError: output {tuple(output.shape)} and target "
                                 f"{tuple(target.shape)} have different sizes")
            target = xp.reshape(target, tuple(output.shape))
        err = xp.sum(xp.abs(output - xp.astype(target, output.dtype)))
        self.sum = err if self.sum is None else self.sum + err
        n = 1
        for s in output.shape:
            n *= s
        self.total += n

    def compute(self) -> float:
        if self.total == 0:
            return float("nan")
        return _read(self.sum)[0] / self.total


class F1Score(Metric):
    """F1 score: harmonic mean of precision and recall.

    ``average="macro"`` (multi-class, ``output (N, C)`` scores): the unweighted mean of the
    per-class F1 over the classes that occur in the targets or the predictions (scikit-learn's
    ``f1_score(average="macro")``). ``average="binary"``: F1 of the positive class, with
    ``output (N,)``/``(N, 1)`` thresholded at ``threshold`` or ``(N, 2)`` scores.
    """

    def __init__(self, average: str = "macro", threshold: float = 0.0, name: str | None = None) -> None:
        if average not in ("macro", "binary"):
            raise ValueError(f"F1Score: average must be 'macro' or 'binary', got {average!r}")
        self.average = average
        self.threshold = float(threshold)
        self.name = "f1" if average == "macro" else "f1_binary"
        super().__init__(name)

    def reset(self) -> None:
        self.tp: Any = None
        self.pred_count: Any = None
        self.true_count: Any = None

    def update(self, output: Any, target: Any) -> None:
        _check_pair("F1Score", output, target)
        b, xp = _xp(output)
        dev = b.device_of(output)
        if self.average == "binary":
            if output.ndim == 2 and output.shape[1] == 2:
                pred = xp.argmax(output, axis=1) == 1
            else:
                pred = _binary_pred(xp, output, self.threshold)
            t = xp.reshape(target, tuple(pred.shape))
            true = t > 0.5 if is_floating(t) else t != 0
            pred_oh, true_oh = pred[..., None], true[..., None]
        else:
            if output.ndim != 2 or target.ndim != 1:
                raise ValueError(f"F1Score: expected output (N, C) and target (N,), got {tuple(output.shape)} and "
                                 f"{tuple(target.shape)}")
            classes = xp.arange(output.shape[1], dtype=target.dtype, device=dev)
            pred = xp.astype(xp.argmax(output, axis=1), target.dtype)
            pred_oh = pred[:, None] == classes[None, :]
            true_oh = target[:, None] == classes[None, :]
        axes = tuple(range(pred_oh.ndim - 1))
        tp = xp.sum(xp.astype(xp.logical_and(pred_oh, true_oh), xp.int64), axis=axes)
        pc = xp.sum(xp.astype(pred_oh, xp.int64), axis=axes)
        tc = xp.sum(xp.astype(true_oh, xp.int64), axis=axes)
        if self.tp is None:
            self.tp, self.pred_count, self.true_count = tp, pc, tc
        else:
            self.tp, self.pred_count, self.true_count = self.tp + tp, self.pred_count + pc, self.true_count + tc

    def compute(self) -> float:
        if self.tp is None:
            return float("nan")
        b, xp = _xp(self.tp)
        vals = _read(xp.concat([self.tp, self.pred_count, self.true_count]))  # one host read
        k = len(vals) // 3
        tp, pc, tc = vals[:k], vals[k:2 * k], vals[2 * k:]
        scores = [2.0 * a / (p + t) for a, p, t in zip(tp, pc, tc, strict=True) if p + t > 0]
        if self.average == "binary":
            return scores[0] if (pc[0] + tc[0]) > 0 else 0.0
        return sum(scores) / len(scores) if scores else 0.0


class Mean(Metric):
    """Running (weighted) mean of values such as the batch losses: ``update(value, weight=1)``."""

    name = "mean"

    def reset(self) -> None:
        self.sum: Any = None
        self.weight = 0.0

    def update(self, value: Any, weight: float = 1.0) -> None:  # type: ignore[override]
        v = value * float(weight)
        self.sum = v if self.sum is None else self.sum + v
        self.weight += float(weight)

    def compute(self) -> float:
        if self.weight == 0:
            return float("nan")
        s = self.sum if isinstance(self.sum, (int, float)) else _read(self.sum)[0]
        return s / self.weight


_ALIASES = {
    "accuracy": lambda: Accuracy(),
    "acc": lambda: Accuracy(),
    "top5_accuracy": lambda: TopKAccuracy(5),
    "top_k_accuracy": lambda: TopKAccuracy(5),
    "mae": lambda: MeanAbsoluteError(),
    "mean_absolute_error": lambda: MeanAbsoluteError(),
    "f1": lambda: F1Score("macro"),
    "f1_macro": lambda: F1Score("macro"),
    "f1_binary": lambda: F1Score("binary"),
}


def get_metric(spec: str | Metric) -> Metric:
    """A metric from a name (``"accuracy"``, ``"top5_accuracy"``, ``"top3_accuracy"``, ``"mae"``,
    ``"f1"``/``"f1_macro"``, ``"f1_binary"``) or a :class:`Metric` instance (returned as is)."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        key = spec.lower()
        if key in _ALIASES:
            return _ALIASES[key]()
        if key.startswith("top") and key.endswith("_accuracy") and key[3:-9].isdigit():
            return TopKAccuracy(int(key[3:-9]))
        raise ValueError(f"unknown metric {spec!r}; known names: {sorted(_ALIASES)} (or topK_accuracy), "
                         "or pass an nnx.metrics.Metric")
    raise TypeError(f"a metric must be a name or an nnx.metrics.Metric, got {type(spec).__name__}")
