"""The tape of recorded forward passes: consumed by backward, bounded, warned about when leaking."""

import pytest

import nnx
from nnx.module import TAPE_WARNING_LENGTH, TapeGrowthWarning

from helpers import rand


def test_backward_consumes_the_tape(backend):
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.Tanh(), nnx.Linear(4, 2))
    x = rand(5, 3, dtype="float32")
    model(x)
    model(x)
    assert all(len(m._tape) == 2 for m in model)
    model.backward(rand(5, 2, dtype="float32"))
    assert all(len(m._tape) == 1 for m in model)
    model.backward(rand(5, 2, dtype="float32"))
    assert all(len(m._tape) == 0 for m in model)
    with pytest.raises(nnx.NotRecordedError, match="Linear.backward: no recorded forward pass"):
        model.backward(rand(5, 2, dtype="float32"))


def test_eval_and_zero_grad_drop_recorded_passes(backend):
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.ReLU())
    model(rand(2, 3, dtype="float32"))
    model.zero_grad()
    assert all(len(m._tape) == 0 for m in model)
    model(rand(2, 3, dtype="float32"))
    model.eval()
    model(rand(2, 3, dtype="float32"))
    assert all(len(m._tape) == 0 for m in model)


def test_unconsumed_forward_passes_warn_once(backend, monkeypatch):
    monkeypatch.setattr("nnx.module.TAPE_WARNING_LENGTH", 5)
    layer = nnx.ReLU()
    x = rand(2, dtype="float32")
    with pytest.warns(TapeGrowthWarning, match="ReLU holds 5 recorded forward passes") as record:
        for _ in range(12):
            layer(x)
    assert len(record) == 1
    assert TAPE_WARNING_LENGTH == 10_000
