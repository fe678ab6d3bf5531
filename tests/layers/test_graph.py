"""nnx.Graph: any DAG of modules with a derived backward — gradchecks, torch parity, errors."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host, rand


def _unet(c=2):
    """A U-Net-like graph: a skip connection across the bottleneck and one across the whole net."""
    f64 = {"dtype": "float64"}
    g = nnx.Graph(inputs=["x"])
    g.add("enc", nnx.Sequential(nnx.Conv2d(c, 4, 3, padding=1, **f64), nnx.ReLU()), "x")
    g.add("down", nnx.Conv2d(4, 4, 2, stride=2, **f64), "enc")
    g.add("mid", nnx.Sequential(nnx.Conv2d(4, 4, 3, padding=1, **f64), nnx.Tanh()), "down")
    g.add("up", nnx.ConvTranspose2d(4, 4, 2, stride=2, **f64), "mid")
    g.add("cat", nnx.Concat(1), "up", "enc")          # the U-Net skip
    g.add("dec", nnx.Conv2d(8, c, 3, padding=1, **f64), "cat")
    g.add("out", nnx.Add(), "dec", "x")               # a residual across the whole net: x fans out
    g.set_outputs("out")
    return g


def _torch_unet(torch, c=2):
    nn = torch.nn

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU())
            self.down = nn.Conv2d(4, 4, 2, stride=2)
            self.mid = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh())
            self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
            self.dec = nn.Conv2d(8, c, 3, padding=1)

        def forward(self, x):
            e = self.enc(x)
            return self.dec(torch.cat([self.up(self.mid(self.down(e))), e], 1)) + x

    return UNet().double()


def test_unet_like_graph_matches_torch(backend, torch):
    g, tg = _unet(), _torch_unet(torch)
    copy_params_to_torch(g, tg)
    x = rand(2, 2, 4, 4, seed=1)
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tg(tx)
    y = g(x)
    assert_close(y, ty, rtol=1e-10, atol=1e-12, what="output")
    dy = np.random.default_rng(2).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy))
    dx = g.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-10, atol=1e-12, what="input gradient")
    tparams = dict(tg.named_parameters())
    for name, p in g.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=1e-10, atol=1e-12, what=name)


def test_unet_like_graph_gradcheck(backend):
    assert nnx.gradcheck(_unet(), rand(1, 2, 4, 4, seed=3))


def _shared_two_inputs_two_outputs():
    shared = nnx.Linear(3, 3, dtype="float64")   # weight sharing: one module at two nodes
    g = nnx.Graph(inputs=["a", "b"])
    g.add("ha", shared, "a")
    g.add("hb", shared, "b")
    g.add("act", nnx.Tanh(), "ha")
    g.add("sum", nnx.Add(), "act", "hb", "a")      # "a" fans out to two nodes
    g.add("parts", nnx.Split([1, 2], dim=1), "sum")
    g.set_outputs("parts:1", "act")
    return g, shared


def test_shared_weights_fan_out_and_several_inputs_and_outputs_gradcheck(backend):
    g, _ = _shared_two_inputs_two_outputs()
    assert nnx.gradcheck(g, rand(2, 3, seed=4), rand(2, 3, seed=5))


def test_shared_weights_accumulate_exactly(backend, torch):
    g, shared = _shared_two_inputs_two_outputs()
    a, b = rand(2, 3, seed=6), rand(2, 3, seed=7)
    tw = torch.from_numpy(host(shared.weight.data).copy()).requires_grad_(True)
    tb = torch.from_numpy(host(shared.bias.data).copy()).requires_grad_(True)
    ta = torch.from_numpy(host(a).copy()).requires_grad_(True)
    tbb = torch.from_numpy(host(b).copy()).requires_grad_(True)
    ha, hb = ta @ tw.T + tb, tbb @ tw.T + tb
    act = torch.tanh(ha)
    s = act + hb + ta
    out = s[:, 1:]
    d_out = np.random.default_rng(8).standard_normal((2, 2))
    (out * torch.from_numpy(d_out)).sum().backward()  # no gradient for the second output
    y1, y2 = g(a, b)
    assert_close(y1, out)
    da, db = g.backward((nnx.asarray(d_out, dtype="float64"), None))
    assert_close(da, ta.grad, rtol=1e-12)
    assert_close(db, tbb.grad, rtol=1e-12)
    assert_close(shared.weight.grad, tw.grad, rtol=1e-12)
    assert_close(shared.bias.grad, tb.grad, rtol=1e-12)


def test_gradients_by_output_name_and_two_calls_before_backward(backend):
    g, shared = _shared_two_inputs_two_outputs()
    a, b = rand(2, 3, seed=9), rand(2, 3, seed=10)
    ones = nnx.asarray(np.ones((2, 3)), dtype="float64")
    g(a, b)
    da_dict, _ = g.backward({"act": ones})
    g.zero_grad()
    g(a, b)
    g(b, a)  # a second call before backward: the records are replayed newest first
    g.backward((None, ones))
    da, _ = g.backward((None, ones))
    assert_close(da, host(da_dict))


def test_graph_inside_sequential_inside_graph(backend):
    inner = nnx.Graph(inputs=["x"], nodes=[("fc", nnx.Linear(3, 3, dtype="float64"), "x"),
                                           ("res", nnx.Add(), ("fc", "x"))], outputs=["res"])
    outer = nnx.Graph(inputs=["x"])
    outer.add("seq", nnx.Sequential(inner, nnx.Tanh(), nnx.Linear(3, 3, dtype="float64")), "x")
    outer.add("skip", nnx.Mul(), "seq", "x")
    outer.set_outputs("skip")
    assert nnx.gradcheck(outer, rand(2, 3, seed=11))
    assert "seq.0.fc.weight" in outer.state_dict()


def test_graph_errors_name_the_problem(backend):
    g = nnx.Graph(inputs=["x"])
    g.add("fc", nnx.Linear(3, 3, dtype="float64"), "x")
    with pytest.raises(KeyError, match=r"node 'b' refers to 'a', which is neither an input \['x'\] nor an earlier "
                                       r"node \['fc'\].*cannot have a cycle"):
        g.add("b", nnx.Tanh(), "a")
    with pytest.raises(KeyError, match="an output refers to 'nope'"):
        g.set_outputs("nope")
    with pytest.raises(ValueError, match="the name 'fc' is already used"):
        g.add("fc", nnx.Tanh(), "x")
    with pytest.raises(RuntimeError, match="no outputs; call set_outputs"):
        g(rand(2, 3))
    g.set_outputs("fc", "x")
    with pytest.raises(TypeError, match=r"unknown input name 'y'; the inputs are \['x'\]"):
        g(y=rand(2, 3))
    with pytest.raises(TypeError, match=r"expected 1 inputs \['x'\], got 2 positional"):
        g(rand(2, 3), rand(2, 3))
    g(rand(2, 3))
    with pytest.raises(ValueError, match=r"the graph has 2 outputs \['fc', 'x'\]; expected 2 gradients"):
        g.backward(nnx.asarray(np.ones((2, 3)), dtype="float64"))
    with pytest.raises(nnx.NotRecordedError, match="Graph.backward: no recorded forward pass"):
        nnx.Graph(inputs=["x"], nodes=[("t", nnx.Tanh(), "x")], outputs=["t"]).backward(rand(2, 3))
