"""Conv3d / F.conv3d (nnx/functional/convolution3d.py): outputs, input and parameter gradients against torch,
float64 gradcheck, padding modes, errors; on every backend."""

from __future__ import annotations

import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host, layer_parity, rand

CONV3D = [dict(kernel_size=3, padding=1), dict(kernel_size=1),
          dict(kernel_size=(2, 3, 2), stride=(2, 1, 2), padding=(1, 0, 1), dilation=(2, 1, 1), groups=2),
          dict(kernel_size=(2, 3, 4), padding="same"), dict(kernel_size=3, padding="valid", bias=False),
          dict(kernel_size=3, padding=1, padding_mode="circular"),
          dict(kernel_size=(3, 2, 3), padding=(1, 1, 2), padding_mode="reflect"),
          dict(kernel_size=2, stride=2, padding=1, padding_mode="replicate")]


@pytest.mark.parametrize("cfg", CONV3D, ids=str)
def test_conv3d_parity_and_gradcheck(backend, torch, cfg):
    layer = nnx.Conv3d(4, 6, dtype="float64", **cfg)
    tlayer = torch.nn.Conv3d(4, 6, dtype=torch.float64, **cfg)
    assert repr(layer) == repr(tlayer)
    assert list(layer.state_dict()) == list(tlayer.state_dict())
    assert tuple(layer.weight.shape) == tuple(tlayer.weight.shape)
    layer_parity(torch, layer, tlayer, rand(2, 4, 5, 4, 6, seed=1))
    small = nnx.Conv3d(1, 1, dtype="float64", **{**cfg, "groups": 1})
    assert nnx.gradcheck(small, rand(1, 1, 3, 3, 4, seed=2))


def test_conv3d_functional(backend, torch):
    x, w, bias = rand(2, 3, 4, 5, 4, seed=1), rand(4, 3, 2, 3, 2, seed=2), rand(4, seed=3)
    t = lambda a: torch.from_numpy(host(a).copy())  # noqa: E731
    expected = torch.nn.functional.conv3d(t(x), t(w), t(bias), stride=(1, 2, 1), padding=1)
    assert_close(F.conv3d(x, w, bias, stride=(1, 2, 1), padding=1), expected, rtol=1e-12, atol=1e-12)


def test_conv3d_errors(backend):
    with pytest.raises(ValueError, match=r"Conv3d\(2, 3, .*expected 5-D input of shape \(N, C, D, H, W\)"):
        nnx.Conv3d(2, 3, 2, dtype="float64")(rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"Conv3d\(2, 3, .*expected input with 2 channels"):
        nnx.Conv3d(2, 3, 2, dtype="float64")(rand(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"Conv3d\(2, 3, .*larger than the padded input"):
        nnx.Conv3d(2, 3, 5, dtype="float64")(rand(1, 2, 3, 6, 6))
    with pytest.raises(ValueError, match="Conv3d: kernel_size must be"):
        nnx.Conv3d(2, 3, (2, 2))
    with pytest.raises(ValueError, match="Conv3d: padding='same' is not supported for strided"):
        nnx.Conv3d(2, 3, 3, stride=2, padding="same")
