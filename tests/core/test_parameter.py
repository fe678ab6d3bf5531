"""nnx.Parameter converts like its array (NumPy's __array__, .numpy(), nnx.to_numpy, detach), on every
backend."""

from __future__ import annotations

import numpy as np

import nnx

from helpers import host


def test_parameter_converts_like_its_array(backend):
    lin = nnx.Linear(3, 2, dtype="float64")
    expect = host(lin.weight.data)
    np.testing.assert_array_equal(nnx.to_numpy(lin.weight), expect)
    np.testing.assert_array_equal(np.asarray(lin.weight), expect)
    assert np.asarray(lin.weight, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(lin.weight.numpy(), expect)
    assert lin.weight.detach() is lin.weight.data
