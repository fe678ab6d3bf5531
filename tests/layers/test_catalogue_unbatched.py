"""Issue 11 (PyTorch's module catalogue): unbatched inputs. Conv1d takes ``(C, L)``; Conv2d,
ConvTranspose2d, MaxPool2d, AvgPool2d and AdaptiveAvgPool2d take ``(C, H, W)``; the output is
unbatched too and the backward takes the unbatched gradient. Parity with PyTorch (output, input
and parameter gradients) and float64 gradchecks on every backend, in the CPU and the
device-shaped formulations; the layers PyTorch refuses unbatched input to (BatchNorm2d) refuse it."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host, rand
from helpers import layer_parity as parity

CASES = [
    ("Conv1d", dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1, dilation=2), (2, 9)),
    ("Conv1d", dict(in_channels=4, out_channels=2, kernel_size=2, groups=2, padding="same"), (4, 6)),
    ("Conv2d", dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (2, 5, 6)),
    ("Conv2d", dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), dilation=(1, 2), groups=2),
     (4, 7, 6)),
    ("ConvTranspose2d", dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1, output_padding=1),
     (2, 4, 3)),
    ("ConvTranspose2d", dict(in_channels=4, out_channels=2, kernel_size=2, groups=2, dilation=2), (4, 3, 3)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1), (3, 7, 6)),
    ("MaxPool2d", dict(kernel_size=2, ceil_mode=True), (2, 5, 5)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False), (3, 7, 6)),
    ("AvgPool2d", dict(kernel_size=2, divisor_override=3), (2, 4, 4)),
    ("AdaptiveAvgPool2d", dict(output_size=(2, 3)), (3, 7, 6)),
    ("AdaptiveAvgPool2d", dict(output_size=1), (3, 4, 5)),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


@pytest.fixture(params=["auto", "always"], ids=["host-shaped", "device-shaped"])
def formulation(request, monkeypatch):
    monkeypatch.setattr(F._device, "DEVICE_PATHS", request.param)
    return request.param


def _distinct(shape):
    """float64 data with distinct values (max pooling differentiable at the probe point)."""
    n = int(np.prod(shape))
    return nnx.asarray(np.random.default_rng(0).permutation(n).reshape(shape) / 7.0, dtype="float64")


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=IDS)
def test_unbatched_parity_with_torch(backend, torch, formulation, name, kwargs, shape):
    layer = getattr(nnx, name)(**kwargs, **({"dtype": "float64"} if "Conv" in name else {}))
    tlayer = getattr(torch.nn, name)(**kwargs).double()
    y = parity(torch, layer, tlayer, _distinct(shape))
    assert y.ndim == len(shape)


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=IDS)
def test_unbatched_equals_batch_of_one(backend, name, kwargs, shape):
    nnx.manual_seed(0)
    layer = getattr(nnx, name)(**kwargs, **({"dtype": "float64"} if "Conv" in name else {}))
    x = _distinct(shape)
    y1 = layer(x)
    dx1 = layer.backward(nnx.asarray(np.ones(tuple(y1.shape)), dtype="float64"))
    y4 = layer(nnx.asarray(host(x)[None], dtype="float64"))
    dx4 = layer.backward(nnx.asarray(np.ones(tuple(y4.shape)), dtype="float64"))
    np.testing.assert_allclose(host(y1), host(y4)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(dx1), host(dx4)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,kwargs,shape", CASES[::2], ids=IDS[::2])
def test_unbatched_gradcheck(backend, formulation, name, kwargs, shape):
    layer = getattr(nnx, name)(**kwargs, **({"dtype": "float64"} if "Conv" in name else {}))
    assert nnx.gradcheck(layer, _distinct(shape))


def test_functional_unbatched_match_torch(backend, torch):
    x, w = rand(2, 6, 5), rand(4, 1, 3, 3, seed=1)
    tx, tw = torch.from_numpy(host(x)), torch.from_numpy(host(w))
    assert_close(F.conv2d(x, w, None, 2, 1, 1, 2), torch.nn.functional.conv2d(tx, tw, None, 2, 1, 1, 2), 1e-10, 1e-10)
    x1, w1 = rand(2, 7), rand(3, 2, 2, seed=2)
    assert_close(F.conv1d(x1, w1, dilation=2), torch.nn.functional.conv1d(torch.from_numpy(host(x1)),
                                                                          torch.from_numpy(host(w1)), dilation=2))
    wt = rand(2, 3, 3, 3, seed=3)
    assert_close(F.conv_transpose2d(x, wt, stride=2), torch.nn.functional.conv_transpose2d(
        tx, torch.from_numpy(host(wt)), stride=2), 1e-10, 1e-10)
    assert_close(F.max_pool2d(x, 2), torch.nn.functional.max_pool2d(tx, 2))
    assert_close(F.avg_pool2d(x, 3, 1, 1), torch.nn.functional.avg_pool2d(tx, 3, 1, 1), 1e-12, 1e-12)
    assert_close(F.adaptive_avg_pool2d(x, (4, 2)), torch.nn.functional.adaptive_avg_pool2d(tx, (4, 2)), 1e-12, 1e-12)


def test_conv_transpose_output_size_unbatched(backend, torch):
    layer = nnx.ConvTranspose2d(2, 1, 3, stride=2, dtype="float64")
    tlayer = torch.nn.ConvTranspose2d(2, 1, 3, stride=2).double()
    parity(torch, layer, tlayer, rand(2, 3, 3), forward_kwargs={"output_size": (8, 8)})


@pytest.mark.parametrize("make,shape,match", [
    (lambda: nnx.Conv2d(2, 3, 3), (5, 5), r"Conv2d\(.*expected 3-D \(unbatched\) or 4-D \(batched\) input"),
    (lambda: nnx.Conv2d(2, 3, 3), (1, 1, 2, 5, 5), r"Conv2d\(.*got shape \(1, 1, 2, 5, 5\)"),
    (lambda: nnx.Conv1d(2, 3, 3), (5,), r"Conv1d\(.*expected 2-D \(unbatched\) or 3-D \(batched\) input"),
    (lambda: nnx.ConvTranspose2d(2, 3, 3), (5, 5), r"ConvTranspose2d\(.*expected 3-D \(unbatched\)"),
    (lambda: nnx.MaxPool2d(2), (4, 4), r"MaxPool2d\(.*expected 3-D \(unbatched\) or 4-D \(batched\)"),
    (lambda: nnx.AvgPool2d(2), (4, 4), r"AvgPool2d\(.*got shape \(4, 4\)"),
    (lambda: nnx.AdaptiveAvgPool2d(2), (4, 4), r"AdaptiveAvgPool2d\(.*got shape \(4, 4\)"),
    (lambda: nnx.Conv2d(2, 3, 3), (3, 5, 5), r"Conv2d\(.*expected input with 2 channels"),
    # PyTorch refuses these too: BatchNorm2d wants 4-D, BatchNorm1d 2-D or 3-D
    (lambda: nnx.BatchNorm2d(2), (2, 4, 4), r"BatchNorm2d\(.*expected 4-D input"),
    (lambda: nnx.BatchNorm1d(2), (2,), r"BatchNorm1d\(.*expected 2-D or 3-D input"),
])
def test_wrong_rank_refused_clearly(backend, make, shape, match):
    with pytest.raises(ValueError, match=match):
        make()(rand(*shape, dtype="float32"))
