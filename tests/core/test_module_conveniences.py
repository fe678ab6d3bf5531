"""get_submodule, half/float/double, cpu/cuda, register_full_backward_hook (PyTorch's semantics), on every
backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host, rand


def _model():
    inner = nnx.Sequential(nnx.Linear(3, 4, dtype="float64"), nnx.Tanh())
    return nnx.Sequential(inner, nnx.Linear(4, 2, dtype="float64"))


def test_get_submodule(backend):
    m = _model()
    assert m.get_submodule("") is m
    assert m.get_submodule("0.1") is m[0][1]
    assert m.get_submodule("1") is m[1]
    with pytest.raises(AttributeError, match="has no submodule '5'"):
        m.get_submodule("0.5")


def test_half_float_double(backend):
    m = nnx.Linear(3, 2)
    if backend.name == "array_api_strict":  # the standard has no float16
        with pytest.raises(TypeError, match="no dtype 'float16'"):
            m.half()
        assert str(m.weight.dtype).endswith("float32")  # unchanged
    else:
        assert str(m.half().weight.dtype).endswith("float16")
    assert str(m.double().weight.dtype).endswith("float64")
    assert str(m.float().weight.dtype).endswith("float32")


def test_cpu_and_cuda(backend):
    m = nnx.Linear(3, 2)
    assert m.cpu() is m
    assert m.backend.name == backend.name
    if backend.name == "array_api_strict":
        with pytest.raises(RuntimeError, match="has no CUDA device"):
            m.cuda()
    elif nnx.available_backends().get("cupy") is not True and backend.name == "numpy":
        with pytest.raises(RuntimeError, match="Linear.cuda: no usable CUDA device for backend 'cupy'"):
            m.cuda()
        assert m.backend.name == "numpy"  # unchanged after the error


def test_full_backward_hook_matches_torch(backend, torch):
    m = _model()
    tm = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh()),
                             torch.nn.Linear(4, 2)).double()
    copy_params_to_torch(m, tm)
    seen, tseen = [], []
    remove = m[1].register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go)))
    m[0].register_full_backward_hook(lambda mod, gi, go: seen.append((gi, go)))
    tm[1].register_full_backward_hook(lambda mod, gi, go: tseen.append((gi, go)))
    tm[0].register_full_backward_hook(lambda mod, gi, go: tseen.append((gi, go)))
    x = rand(5, 3, seed=1)
    g = rand(5, 2, seed=2)
    m(x)
    tx = torch.tensor(host(x), requires_grad=True)
    tm(tx).backward(torch.tensor(host(g)))
    m.backward(g)
    assert len(seen) == len(tseen) == 2
    for (gi, go), (tgi, tgo) in zip(seen, tseen):
        assert len(gi) == len(tgi) and len(go) == len(tgo)
        for a, b in zip(gi + go, tgi + tgo):
            assert_close(a, b, rtol=1e-12, atol=1e-14)
    remove()
    m(x)
    m.backward(g)
    assert len(seen) == 3  # only m[0]'s hook is left


def test_backward_hook_can_replace_grad_input(backend):
    lin = nnx.Linear(3, 2, dtype="float64")
    lin.register_full_backward_hook(lambda mod, gi, go: (gi[0] * 2.0,))
    x = rand(4, 3)
    lin(x)
    dx = lin.backward(rand(4, 2, seed=3))
    lin2 = nnx.Linear(3, 2, dtype="float64")
    lin2.load_state_dict(lin.state_dict())
    lin2(x)
    np.testing.assert_allclose(host(dx), 2.0 * host(lin2.backward(rand(4, 2, seed=3))))
