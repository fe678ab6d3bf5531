"""The JAX adapter's own contract (beyond the suite, which runs on JAX with NNX_TEST_BACKENDS=jax)."""

from __future__ import annotations

import pytest

import nnx

jax = pytest.importorskip("jax", reason="the JAX adapter needs jax (pip install 'nnx-backprop[jax]')")


def test_synchronize_waits_for_dispatched_work():
    with nnx.use_backend("jax") as b:
        xp = b.xp
        x = xp.ones((1500, 1500), dtype=xp.float32)
        for _ in range(6):  # ~0.1 s of dispatched matrix products: not finished when the loop returns
            x = xp.matmul(x, x) / 1500.0
        nnx.synchronize()
    assert x.is_ready()
    assert all(a.is_ready() for a in jax.live_arrays())
