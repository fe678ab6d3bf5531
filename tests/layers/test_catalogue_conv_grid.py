"""Issue 11: strided + dilated + grouped convolutions (Conv1d, Conv2d, ConvTranspose2d) against
PyTorch: output, input gradient, weight and bias gradients, on every backend, in the CPU and the
device-shaped formulations. (A strided, dilated convolution whose input gradient ignored the
dilation once passed the whole suite; every case here combines stride > 1 with dilation > 1.)"""

from __future__ import annotations

import pytest

import nnx
import nnx.functional as F

from helpers import layer_parity as parity
from helpers import rand


@pytest.fixture(params=["auto", "always"], ids=["host-shaped", "device-shaped"])
def formulation(request, monkeypatch):
    monkeypatch.setattr(F._device, "DEVICE_PATHS", request.param)
    return request.param


def _ids(cases):
    return ["-".join(f"{k}={v}" for k, v in kw.items() if k not in ("in_channels", "out_channels")) for kw, _ in cases]


CONV2D = [
    (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, dilation=2, groups=2), (2, 4, 11, 10)),
    (dict(in_channels=4, out_channels=4, kernel_size=(3, 2), stride=(2, 3), dilation=(3, 2), padding=(2, 1),
          groups=4, bias=False), (2, 4, 13, 12)),
    (dict(in_channels=6, out_channels=3, kernel_size=2, stride=3, dilation=2, padding=1, groups=3), (1, 6, 9, 8)),
    (dict(in_channels=2, out_channels=4, kernel_size=3, stride=(1, 2), dilation=(2, 1), padding=2), (2, 2, 7, 9)),
    (dict(in_channels=4, out_channels=8, kernel_size=3, stride=1, dilation=2, padding="same", groups=4),
     (2, 4, 6, 7)),
    (dict(in_channels=4, out_channels=2, kernel_size=1, stride=2, groups=2), (2, 4, 5, 5)),
]
CONV1D = [
    (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, dilation=3, groups=2), (2, 4, 17)),
    (dict(in_channels=3, out_channels=3, kernel_size=4, stride=3, dilation=2, padding=2, groups=3, bias=False),
     (2, 3, 15)),
    (dict(in_channels=2, out_channels=4, kernel_size=2, stride=2, dilation=2, padding=1), (1, 2, 10)),
]
CONVT = [
    (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, dilation=2, groups=2), (2, 4, 4, 5)),
    (dict(in_channels=4, out_channels=4, kernel_size=(3, 2), stride=(2, 3), dilation=(2, 3), padding=(1, 2),
          output_padding=(1, 2), groups=4, bias=False), (1, 4, 4, 3)),
    (dict(in_channels=6, out_channels=3, kernel_size=2, stride=3, dilation=2, padding=1, output_padding=1,
          groups=3), (2, 6, 3, 3)),
    (dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, dilation=3, padding=2), (2, 2, 3, 4)),
]


@pytest.mark.parametrize("kwargs,shape", CONV2D, ids=_ids(CONV2D))
def test_conv2d_strided_dilated_grouped(backend, torch, formulation, kwargs, shape):
    parity(torch, nnx.Conv2d(**kwargs, dtype="float64"), torch.nn.Conv2d(**kwargs).double(), rand(*shape))


@pytest.mark.parametrize("kwargs,shape", CONV1D, ids=_ids(CONV1D))
def test_conv1d_strided_dilated_grouped(backend, torch, formulation, kwargs, shape):
    parity(torch, nnx.Conv1d(**kwargs, dtype="float64"), torch.nn.Conv1d(**kwargs).double(), rand(*shape))


@pytest.mark.parametrize("kwargs,shape", CONVT, ids=_ids(CONVT))
def test_conv_transpose2d_strided_dilated_grouped(backend, torch, formulation, kwargs, shape):
    parity(torch, nnx.ConvTranspose2d(**kwargs, dtype="float64"), torch.nn.ConvTranspose2d(**kwargs).double(),
           rand(*shape))


def test_strided_dilated_grouped_gradchecks(backend):
    assert nnx.gradcheck(nnx.Conv2d(4, 4, 3, stride=2, dilation=2, padding=1, groups=2, dtype="float64"),
                         rand(1, 4, 7, 7))
    assert nnx.gradcheck(nnx.ConvTranspose2d(4, 2, 2, stride=2, dilation=3, groups=2, dtype="float64"),
                         rand(1, 4, 3, 2))
    assert nnx.gradcheck(nnx.Conv1d(2, 4, 3, stride=2, dilation=2, groups=2, dtype="float64"), rand(1, 2, 9))
