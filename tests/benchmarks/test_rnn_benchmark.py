"""The LSTM benchmark's raw-NumPy floor computes the same gradients as nnx (an honest baseline)."""

from __future__ import annotations

import os
import sys

import numpy as np

import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def test_numpy_floor_matches_nnx_gradients():
    import bench_lstm as bl

    x, y = bl.make_data()
    step = bl.numpy_floor_step(x, y)
    before = [p.copy() for p in step.params]
    step()  # computes the gradients of batch 0, then updates the parameters
    with nnx.use_backend("numpy"):
        lstm, head = nnx.LSTM(bl.INPUT, bl.HIDDEN), nnx.Linear(bl.HIDDEN, bl.CLASSES)
        params = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0, head.weight, head.bias]
        for p, v in zip(params, before, strict=True):
            p.data = v.copy()
        loss_fn = nnx.CrossEntropyLoss()
        _, (h_n, _) = lstm(x[0])
        loss_fn(head(h_n[0]), y[0])
        lstm.backward(None, head.backward(loss_fn.backward())[None])
        for p, g in zip(params, step.grads, strict=True):
            np.testing.assert_allclose(p.grad, g, rtol=1e-4, atol=1e-6 * float(np.abs(g).max()))
