"""Issue 11 (PyTorch's module catalogue): every nnx layer, container and loss that torch.nn also
has takes its forward arguments under PyTorch's names (``m(input=t)``, ``mha(query=..., ...)``),
and positional calls keep working."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import nnx
import nnx.layers

torch_nn = pytest.importorskip("torch.nn", reason="PyTorch's signatures are the reference; pip install torch==2.13.0")


def _shared_classes() -> list[str]:
    names = set(nnx.layers.__all__)
    names |= {n for n in dir(nnx) if inspect.isclass(getattr(nnx, n)) and issubclass(getattr(nnx, n), nnx.Module)}
    return sorted(n for n in names if hasattr(torch_nn, n) and inspect.isclass(getattr(torch_nn, n)))


def _forward_names(cls: type) -> list[str]:
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


SHARED = _shared_classes()


def test_the_catalogue_covers_the_layers():
    # the comparison below must not pass vacuously: the usual layers are in it
    for name in ("Linear", "Conv2d", "ConvTranspose2d", "MaxPool2d", "BatchNorm2d", "GroupNorm", "ReLU",
                 "Softmax", "Sequential", "LSTM", "MultiheadAttention", "TransformerEncoderLayer", "MSELoss"):
        assert name in SHARED
    assert len(SHARED) >= 50


@pytest.mark.parametrize("name", SHARED)
def test_forward_argument_names_match_torch(name):
    tcls = getattr(torch_nn, name)
    if tcls.forward is torch_nn.Module.forward:  # abstract in torch (Module, RNNBase): nothing to compare
        pytest.skip(f"torch.nn.{name}.forward is abstract")
    ours, theirs = _forward_names(getattr(nnx, name, None) or getattr(nnx.layers, name)), _forward_names(tcls)
    # nnx may add arguments of its own after torch's (RNN ``lengths``), never rename or reorder torch's
    assert ours[:len(theirs)] == theirs, f"nnx.{name}.forward{ours} vs torch.nn.{name}.forward{theirs}"


@pytest.mark.parametrize("make,shape", [
    (lambda: nnx.Linear(3, 2), (4, 3)),
    (lambda: nnx.Conv2d(2, 3, 3), (1, 2, 5, 5)),
    (lambda: nnx.Conv1d(2, 3, 3), (1, 2, 5)),
    (lambda: nnx.ConvTranspose2d(2, 3, 3), (1, 2, 4, 4)),
    (lambda: nnx.MaxPool2d(2), (1, 2, 4, 4)),
    (lambda: nnx.AvgPool2d(2), (1, 2, 4, 4)),
    (lambda: nnx.AdaptiveAvgPool2d(1), (1, 2, 4, 4)),
    (lambda: nnx.BatchNorm2d(2), (2, 2, 3, 3)),
    (lambda: nnx.BatchNorm1d(2), (3, 2)),
    (lambda: nnx.GroupNorm(1, 2), (2, 2, 3)),
    (lambda: nnx.LayerNorm(3), (2, 3)),
    (lambda: nnx.ReLU(), (2, 3)),
    (lambda: nnx.Softmax(dim=1), (2, 3)),
    (lambda: nnx.LogSoftmax(dim=1), (2, 3)),
    (lambda: nnx.PReLU(), (2, 3)),
    (lambda: nnx.Flatten(), (2, 3, 2)),
    (lambda: nnx.Identity(), (2, 3)),
    (lambda: nnx.Dropout(0.5), (2, 3)),
    (lambda: nnx.Sequential(nnx.Linear(3, 2), nnx.Tanh()), (4, 3)),
    (lambda: nnx.PixelShuffle(2), (1, 4, 2, 2)),
    (lambda: nnx.Upsample(scale_factor=2), (1, 1, 2, 2)),
])
def test_input_keyword_equals_positional(backend, make, shape):
    nnx.manual_seed(0)
    m = make().eval()
    x = nnx.asarray(np.random.default_rng(0).standard_normal(shape))
    np.testing.assert_array_equal(nnx.to_numpy(m(input=x)), nnx.to_numpy(m(x)))


def test_input_keyword_records_for_backward(backend):
    m = nnx.Linear(3, 2)
    x = nnx.asarray(np.ones((4, 3)))
    y = m(input=x)
    dx = m.backward(nnx.asarray(np.ones(tuple(y.shape))))
    np.testing.assert_allclose(nnx.to_numpy(dx), np.ones((4, 2)) @ nnx.to_numpy(m.weight.data), rtol=1e-6)


def test_transposed_conv_output_size_keyword(backend):
    up = nnx.ConvTranspose2d(2, 1, 3, stride=2)
    x = nnx.asarray(np.ones((1, 2, 3, 3)))
    assert tuple(up(input=x, output_size=(8, 8)).shape) == (1, 1, 8, 8)
