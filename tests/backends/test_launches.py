"""The launch meter on tiny code with known counts (NumPy counted as CuPy, and torch)."""

from __future__ import annotations

import numpy as np
import pytest

import nnx


@pytest.fixture
def counted():
    with nnx.use_backend(nnx.launches.counting_backend()) as b:
        yield b


def test_operators_creation_views_and_syncs(counted):
    xp = counted.xp
    x = nnx.asarray(np.arange(6.0).reshape(2, 3), "float64")
    with nnx.count_launches() as n:
        y = x * 2 + 1              # 2
        y += 1                     # 1 (in place)
        z = xp.zeros((3,))         # 1 (a memset)
        e = xp.empty((3,))         # 0 (allocation only)
        v = xp.reshape(xp.permute_dims(y, (1, 0)), (6,))  # 0 (views)
        s = xp.sum(v)              # 1
        g = y[np.array([1, 0])]    # 1 (gather)
        y[0, :] = 0.0              # 1 (a write)
        t = y.T                    # 0
        f = float(s)               # not a launch: a sync
        c = xp.astype(z, xp.float32)  # 1
        _ = (y.shape, y.dtype, e, t, g, c, f)
    assert n.total == 8, n
    assert dict(n.by_op) == {"multiply": 1, "add": 2, "zeros": 1, "sum": 1, "gather": 1, "setitem": 1, "astype": 1}
    assert dict(n.syncs) == {"float": 1}


def test_fused_adapter_method_counts_one(counted):
    gates = nnx.asarray(np.zeros((2, 8)), "float32")
    c = nnx.asarray(np.zeros((2, 2)), "float32")
    with nnx.count_launches() as fused:
        counted.lstm_cell_forward(gates, c)
    assert fused.total == 1 and dict(fused.by_op) == {"adapter.lstm_cell_forward": 1}
    with nnx.use_backend(nnx.launches.counting_backend(fused=False)):
        gates = nnx.asarray(np.zeros((2, 8)), "float32")
        c = nnx.asarray(np.zeros((2, 2)), "float32")
        with nnx.count_launches() as unfused:
            nnx.get_backend().lstm_cell_forward(gates, c)
    assert unfused.total > 5


def test_linear_forward_backward_count(counted):
    layer = nnx.Linear(4, 3)
    x = nnx.asarray(np.ones((2, 4)), "float32")
    with nnx.count_launches() as n:
        layer.backward(layer(x))
    assert n.total == 5 and n.by_op["adapter.matmul"] == 3  # x W^T, + b; dx, dW, db=sum


def test_meters_do_not_nest_and_other_backends_say_how(counted):
    with nnx.count_launches():
        with pytest.raises(RuntimeError, match="do not nest"):
            with nnx.count_launches():
                pass
    if nnx.available_backends().get("array_api_strict") is True:
        with pytest.raises(NotImplementedError, match="counting_backend"):
            with nnx.count_launches(nnx.backends_get("array_api_strict") if hasattr(nnx, "backends_get") else
                                    __import__("nnx_backends").get("array_api_strict")):
                pass


def test_torch_meter(torch):
    with nnx.use_backend("torch"):
        x = nnx.asarray(np.ones((2, 3)), "float32")
        with nnx.count_launches() as n:
            y = x * 2 + 1
            y = y.reshape(3, 2)          # a view: not counted
            s = y.sum()
            float(s)
    assert n.by_op == {"mul": 1, "add": 1, "sum": 1}
    assert sum(n.syncs.values()) == 1


def test_layer_norm_counts_what_cupy_launches(counted):
    """The NumPy adapter's cache-blocked LayerNorm loops over row blocks; the meter counts CuPy's
    launches (forward: the row kernel; backward: dy * xhat and its sum, sum(dy), the row kernel),
    not one per block, whatever the number of rows."""
    counts = []
    for rows in (4, 20000):  # 20000 x 16: five cache blocks on NumPy
        ln = nnx.LayerNorm(16)
        x = nnx.asarray(np.random.default_rng(0).standard_normal((rows, 16)), "float32")
        with nnx.count_launches() as n:
            ln.backward(ln(x))
        counts.append(n.total)
    assert counts == [5, 5], counts
