"""nnx.metrics: Accuracy, F1Score, TopKAccuracy, MeanAbsoluteError against scikit-learn, accumulated over
batches on the device, names and errors, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx_backends as backends

from helpers import small_mlp


def test_metrics_match_sklearn(backend):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((40, 5))
    target = rng.integers(0, 5, 40)
    pred = scores.argmax(1)
    o, t = nnx.asarray(scores), nnx.asarray(target)
    assert nnx.metrics.Accuracy()(o, t) == pytest.approx(sk.accuracy_score(target, pred))
    assert nnx.metrics.F1Score()(o, t) == pytest.approx(sk.f1_score(target, pred, average="macro"))
    assert nnx.metrics.TopKAccuracy(3)(o, t) == pytest.approx(
        sk.top_k_accuracy_score(target, scores, k=3, labels=range(5)))
    binary_t = target % 2
    assert nnx.metrics.F1Score("binary")(nnx.asarray(scores[:, 0]), nnx.asarray(binary_t)) == pytest.approx(
        sk.f1_score(binary_t, scores[:, 0] > 0))
    assert nnx.metrics.Accuracy()(nnx.asarray(scores[:, :1]), nnx.asarray(binary_t)) == pytest.approx(
        sk.accuracy_score(binary_t, scores[:, 0] > 0))
    assert nnx.metrics.MeanAbsoluteError()(nnx.asarray(scores[:, :1]), nnx.asarray(scores[:, 1])) == pytest.approx(
        sk.mean_absolute_error(scores[:, 1], scores[:, 0]), rel=1e-6)


def test_metrics_accumulate_over_batches(backend):
    rng = np.random.default_rng(1)
    scores, target = rng.standard_normal((30, 4)), rng.integers(0, 4, 30)
    for metric in (nnx.metrics.Accuracy(), nnx.metrics.F1Score(), nnx.metrics.TopKAccuracy(2),
                   nnx.metrics.MeanAbsoluteError()):
        full_target = target if metric.name != "mae" else scores[:, ::-1]
        whole = metric(nnx.asarray(scores), nnx.asarray(full_target))
        metric.reset()
        for i in range(0, 30, 7):
            t = target[i:i + 7] if metric.name != "mae" else scores[i:i + 7, ::-1]
            metric.update(nnx.asarray(scores[i:i + 7]), nnx.asarray(t))
        assert metric.compute() == pytest.approx(whole, rel=1e-6), metric.name
        # the accumulators are arrays of the backend: nothing was read back per batch
        acc = next(getattr(metric, a) for a in ("correct", "tp", "sum") if getattr(metric, a, None) is not None)
        assert backends.backend_of(acc) is backend


def test_metric_names_and_errors():
    assert nnx.metrics.get_metric("top3_accuracy").k == 3
    assert nnx.metrics.get_metric("f1_binary").average == "binary"
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        nnx.metrics.get_metric("auc")
    with pytest.raises(ValueError, match="duplicate metric names"):
        nnx.fit(small_mlp(), nnx.CrossEntropyLoss(), nnx.optim.SGD(small_mlp().parameters()), [],
                metrics=["acc", "accuracy"])
