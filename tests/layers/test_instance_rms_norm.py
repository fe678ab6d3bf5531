"""InstanceNorm1d/2d and RMSNorm (nnx/layers/normalization.py, nnx/functional/normalization_extra.py):
outputs, input and parameter gradients and running statistics against torch, float64 gradcheck, state_dict
keys, errors; on every backend."""

from __future__ import annotations

import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, copy_params_to_torch, host, rand, step_parity

IN_GRID = [dict(), dict(affine=True), dict(track_running_stats=True), dict(affine=True, track_running_stats=True),
           dict(affine=True, track_running_stats=True, momentum=None, eps=1e-3)]


@pytest.mark.parametrize("cfg", IN_GRID, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("kind,shape", [("1d", (3, 4, 5)), ("2d", (2, 4, 3, 3)), ("1d", (4, 6)), ("2d", (4, 2, 3))],
                         ids=["1d", "2d", "1d-unbatched", "2d-unbatched"])
def test_instance_norm_parity(backend, torch, cfg, kind, shape):
    cls, tcls = (nnx.InstanceNorm1d, torch.nn.InstanceNorm1d) if kind == "1d" else \
        (nnx.InstanceNorm2d, torch.nn.InstanceNorm2d)
    layer = cls(4, dtype="float64", **cfg)
    tlayer = tcls(4, dtype=torch.float64, **cfg)
    assert repr(layer).startswith(cls.__name__)
    if layer.weight is not None:
        layer.weight.data = rand(4, seed=7) * 0.5 + 1.0
        layer.bias.data = rand(4, seed=8)
    copy_params_to_torch(layer, tlayer)
    assert list(layer.state_dict()) == list(tlayer.state_dict())
    for step in range(3):  # training: instance statistics; running statistics follow torch's
        step_parity(torch, layer, tlayer, rand(*shape, seed=10 + step, scale=2.0) + 0.5, seed=step)
    tsd = tlayer.state_dict()
    for key, value in layer.state_dict().items():
        assert_close(value, tsd[key], rtol=1e-12, atol=1e-12, what=key)
    layer.eval()
    tlayer.eval()  # eval: the running statistics where tracked, the instance statistics otherwise
    step_parity(torch, layer, tlayer, rand(*shape, seed=20), seed=5)


@pytest.mark.parametrize("cfg", [dict(), dict(affine=True), dict(affine=True, track_running_stats=True)])
def test_instance_norm_gradcheck(backend, cfg):
    layer = nnx.InstanceNorm2d(3, dtype="float64", **cfg)
    if layer.weight is not None:
        layer.weight.data = rand(3, seed=1) + 1.5
        layer.bias.data = rand(3, seed=2)
    x = rand(2, 3, 2, 3, seed=3)
    assert nnx.gradcheck(layer, x)
    assert nnx.gradcheck(nnx.InstanceNorm1d(3, dtype="float64"), rand(3, 4, seed=5))  # unbatched


def test_instance_norm_functional_in_place(backend, torch):
    x = rand(3, 2, 5, seed=4)
    rm, rv = nnx.asarray([0.5, -0.5], dtype="float64"), nnx.asarray([1.0, 2.0], dtype="float64")
    trm, trv = torch.tensor(host(rm)), torch.tensor(host(rv))
    ty = torch.nn.functional.instance_norm(torch.tensor(host(x)), trm, trv, momentum=0.2)
    if not nnx.get_backend().mutable:
        with pytest.raises(ValueError, match="instance_norm: cannot update running_mean"):
            F.instance_norm(x, rm, rv, momentum=0.2)
        return
    y = F.instance_norm(x, rm, rv, momentum=0.2)
    assert_close(y, ty, rtol=1e-12, atol=1e-12, what="output")
    assert_close(rm, trm, rtol=1e-12, atol=1e-12, what="running_mean")
    assert_close(rv, trv, rtol=1e-12, atol=1e-12, what="running_var")


def test_instance_norm_errors(backend):
    with pytest.raises(ValueError, match=r"InstanceNorm2d\(3.*expected 3-D or 4-D input"):
        nnx.InstanceNorm2d(3, dtype="float64")(rand(2, 3, dtype="float64"))
    with pytest.raises(ValueError, match=r"InstanceNorm1d\(3.*expected input with 3 channels"):
        nnx.InstanceNorm1d(3, affine=True, dtype="float64")(rand(2, 4, 5))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        nnx.InstanceNorm1d(3, dtype="float64")(rand(2, 3, 1))
    with pytest.warns(UserWarning, match="expected input with 3 channels"):
        nnx.InstanceNorm1d(3, dtype="float64")(rand(2, 4, 5))  # no parameters or statistics: torch warns too
    with pytest.raises(TypeError, match="InstanceNorm1d"):
        nnx.InstanceNorm1d(3, affine=True, dtype="float64")(rand(2, 3, 5, dtype="float32"))


@pytest.mark.parametrize("shape,normalized,cfg", [
    ((3, 5), 5, dict()),
    ((2, 3, 4), (3, 4), dict(eps=1e-3)),
    ((2, 3, 4), 4, dict(elementwise_affine=False)),
    ((6,), [6], dict(eps=0.5)),
])
def test_rms_norm_parity_and_gradcheck(backend, torch, shape, normalized, cfg):
    layer = nnx.RMSNorm(normalized, dtype="float64", **cfg)
    tlayer = torch.nn.RMSNorm(normalized, dtype=torch.float64, **cfg)
    assert list(layer.state_dict()) == list(tlayer.state_dict())
    assert repr(layer) == repr(tlayer)
    if layer.weight is not None:
        layer.weight.data = rand(*layer.normalized_shape, seed=3) * 0.5 + 1.0
    copy_params_to_torch(layer, tlayer)
    step_parity(torch, layer, tlayer, rand(*shape, seed=1), seed=2)
    assert nnx.gradcheck(layer, rand(*shape, seed=4))


def test_rms_norm_default_eps_is_dtype_eps(backend, torch):
    x = rand(2, 3, seed=0, dtype="float32") * 1e-4  # small inputs: eps matters
    y = F.rms_norm(x, 3)
    ty = torch.nn.functional.rms_norm(torch.tensor(host(x)), (3,))
    assert_close(y, ty, rtol=1e-5, atol=1e-6, what="float32 output")


def test_rms_norm_errors(backend):
    with pytest.raises(ValueError, match=r"RMSNorm\(\(4,\).*expected input of shape \(\*, 4\)"):
        nnx.RMSNorm(4, dtype="float64")(rand(2, 3))
    with pytest.raises(ValueError, match="RMSNorm: normalized_shape must be"):
        nnx.RMSNorm(0)
    with pytest.raises(ValueError, match="RMSNorm: eps must be"):
        nnx.RMSNorm(3, eps=-1.0)
    with pytest.raises(TypeError, match="RMSNorm"):
        nnx.RMSNorm(3, dtype="float64")(rand(2, 3, dtype="float32"))
