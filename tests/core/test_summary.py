"""nnx.summary: the input shape without the batch dimension or the full input size, and the errors that
tell them apart, on every backend."""

from __future__ import annotations

import pytest

import nnx


def test_summary_accepts_both_input_forms(backend):
    model = nnx.Sequential(nnx.Linear(5, 3), nnx.ReLU())
    a = nnx.summary(model, (5,), batch_size=4, print_fn=None)
    b = nnx.summary(model, input_size=(4, 5), print_fn=None)
    assert a["layers"] == b["layers"] and a["layers"][0][2] == (4, 3)
    conv = nnx.Sequential(nnx.Conv2d(1, 2, 3))
    assert nnx.summary(conv, input_size=(2, 1, 8, 8), print_fn=None)["layers"][0][2] == (2, 2, 6, 6)
    with pytest.raises(ValueError, match="excludes the batch dimension"):
        nnx.summary(conv, (2, 1, 8, 8), print_fn=None)  # torchinfo's form passed as input_shape
    with pytest.raises(TypeError, match="either input_shape"):
        nnx.summary(model, print_fn=None)
