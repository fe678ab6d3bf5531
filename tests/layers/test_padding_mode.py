"""Conv1d/Conv2d ``padding_mode`` "zeros", "reflect", "replicate", "circular" (nnx/layers/convolution.py):
outputs, input and parameter gradients against torch, float64 gradcheck, errors; on every backend."""

from __future__ import annotations

import pytest

import nnx

from helpers import layer_parity, rand

MODES = ["zeros", "reflect", "replicate", "circular"]
CONV2D = [dict(kernel_size=3, padding=1), dict(kernel_size=(3, 2), padding=(2, 1), stride=2),
          dict(kernel_size=3, padding="same", dilation=2), dict(kernel_size=(2, 4), padding="same"),
          dict(kernel_size=3, padding=1, groups=2), dict(kernel_size=3, padding="valid")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", CONV2D, ids=str)
def test_conv2d_padding_mode(backend, torch, mode, cfg):
    layer = nnx.Conv2d(4, 6, padding_mode=mode, dtype="float64", **cfg)
    tlayer = torch.nn.Conv2d(4, 6, padding_mode=mode, dtype=torch.float64, **cfg)
    assert repr(layer) == repr(tlayer)
    assert list(layer.state_dict()) == list(tlayer.state_dict())
    layer_parity(torch, layer, tlayer, rand(2, 4, 6, 7, seed=1))
    small = nnx.Conv2d(2, 2, padding_mode=mode, dtype="float64", **{**cfg, "groups": 1})
    assert nnx.gradcheck(small, rand(1, 2, 5, 5, seed=2))


CONV1D = [dict(kernel_size=3, padding=1), dict(kernel_size=4, padding=3, stride=2), dict(kernel_size=4, padding="same"),
          dict(kernel_size=3, padding=2, dilation=2)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cfg", CONV1D, ids=str)
def test_conv1d_padding_mode(backend, torch, mode, cfg):
    layer = nnx.Conv1d(3, 5, padding_mode=mode, dtype="float64", **cfg)
    tlayer = torch.nn.Conv1d(3, 5, padding_mode=mode, dtype=torch.float64, **cfg)
    assert repr(layer) == repr(tlayer)
    layer_parity(torch, layer, tlayer, rand(2, 3, 9, seed=1))
    assert nnx.gradcheck(nnx.Conv1d(2, 2, padding_mode=mode, dtype="float64", **cfg), rand(1, 2, 7, seed=2))


def test_padding_mode_errors(backend):
    with pytest.raises(ValueError, match=r"Conv2d: padding_mode must be one of .*got 'mirror'"):
        nnx.Conv2d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"ConvTranspose2d: only padding_mode='zeros'"):
        nnx.ConvTranspose2d(2, 2, 3, padding_mode="circular")
    with pytest.raises(ValueError, match=r"Conv2d\(2, 2, .*padding_mode=reflect\): pad: reflect padding \(3, 3\) "
                                         r"must be smaller"):
        nnx.Conv2d(2, 2, 7, padding=3, padding_mode="reflect", dtype="float64")(rand(1, 2, 3, 8))
    with pytest.raises(ValueError, match=r"Conv1d\(2, 2, .*padding_mode=circular\): expected 2-D or 3-D input"):
        nnx.Conv1d(2, 2, 3, padding=1, padding_mode="circular", dtype="float64")(rand(1, 2, 3, 8))
