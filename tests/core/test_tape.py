"""The tape of recorded forward passes: consumed by backward, bounded, warned about when leaking."""

import re
import warnings

import numpy as np
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


def test_tape_warning_by_memory_held(backend):
    model = nnx.Sequential(nnx.Linear(64, 64), nnx.ReLU())
    x = nnx.asarray(np.ones((256, 64)))  # 64 KiB of float32 per pass kept by each layer
    old = nnx.module.TAPE_WARNING_BYTES
    nnx.module.TAPE_WARNING_BYTES = 1 * 2**20
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(40):
                model(x)
        msgs = [str(w.message) for w in caught if issubclass(w.category, TapeGrowthWarning)]
        assert msgs, "no warning although 40 passes keep 2.5 MiB"
        # 16 passes of 64 KiB; 8 where Linear+ReLU run fused (the Linear's closure keeps its input and output)
        held = re.search(r"holds (\d+) recorded forward passes", msgs[0])
        assert held and int(held.group(1)) in (8, 16) and "MiB" in msgs[0] and "no_grad()" in msgs[0]
        model.clear_tape()
        with warnings.catch_warnings():  # one pass at a time, consumed: never a warning
            warnings.simplefilter("error")
            for _ in range(40):
                model(x)
                model.backward(nnx.asarray(np.ones((256, 64))))
    finally:
        nnx.module.TAPE_WARNING_BYTES = old
        model.clear_tape()
