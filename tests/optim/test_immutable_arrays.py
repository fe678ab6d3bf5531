"""Every optimizer updates immutable arrays (JAX) exactly as mutable ones (NumPy): no silent no-op steps.

On an immutable library ``x += y`` rebinds a local name instead of changing the array; an optimizer
that updated its state through such names would leave the parameters unchanged without an error.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnx

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("NAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01)),
    ("Adadelta", dict(lr=1.0)),
]


def _run(backend: str, name: str, kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    with nnx.use_backend(backend):
        p = nnx.Parameter(nnx.asarray(w0.copy(), dtype="float64"))
        opt = getattr(nnx.optim, name)([p], **kwargs)
        for g in grads:
            p.grad = nnx.asarray(g, dtype="float64")
            opt.step()
        return nnx.to_numpy(p.data), w0


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_optimizer_steps_on_immutable_arrays_equal_the_mutable_ones(name, kwargs):
    pytest.importorskip("jax", reason="JAX is the immutable-array backend (pip install 'nnx-backprop[jax]')")
    if nnx.available_backends().get("jax") is not True:
        pytest.skip(f"jax backend unavailable: {nnx.available_backends().get('jax')}")
    on_numpy, w0 = _run("numpy", name, kwargs)
    on_jax, _ = _run("jax", name, kwargs)
    assert not np.allclose(on_numpy, w0), "the steps moved the parameters"
    np.testing.assert_allclose(on_jax, on_numpy, rtol=1e-12, atol=1e-12)
