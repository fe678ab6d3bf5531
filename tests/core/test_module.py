"""The Module system against torch.nn: parameter and state_dict names/order/shapes, loading torch state
dicts, strict loading, atomic loads, train/eval, moving between backends and dtypes, zero_grad, no_grad,
repr, summary, Sequential/ModuleList/ModuleDict."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import nnx
import nnx.functional as F
import nnx_backends as registry

from helpers import assert_close, host, rand


# ----------------------------------------------------------------------------- an equivalent pair of models
class Block(nnx.Module):
    def __init__(self):
        super().__init__()
        self.fc = nnx.Linear(4, 4)
        self.act = nnx.ReLU()
        self.scale = nnx.Parameter(nnx.asarray(np.linspace(0.5, 1.5, 4)))

    def forward(self, x):
        return self.act(self.fc(x)) * self.scale.data


class Net(nnx.Module):
    def __init__(self):
        super().__init__()
        self.embed = nnx.Linear(3, 4)
        self.blocks = nnx.ModuleList([Block(), Block()])
        self.head = nnx.Sequential(nnx.Linear(4, 4), nnx.Tanh(), nnx.Linear(4, 2, bias=False))
        self.heads = nnx.ModuleDict({"a": nnx.Linear(2, 1), "b": nnx.Linear(2, 3)})
        self.register_buffer("running", nnx.asarray(np.arange(2.0)))
        self.register_buffer("steps", nnx.asarray(np.array(3)))
        self.register_buffer("scratch", nnx.asarray(np.zeros(5)), persistent=False)

    def forward(self, x):
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.head(x) + self.running
        return self.heads["b"](x)


def torch_net(torch):
    nn = torch.nn

    class TBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.ReLU()
            self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 4))

        def forward(self, x):
            return self.act(self.fc(x)) * self.scale

    class TNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, 4)
            self.blocks = nn.ModuleList([TBlock(), TBlock()])
            self.head = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2, bias=False))
            self.heads = nn.ModuleDict({"a": nn.Linear(2, 1), "b": nn.Linear(2, 3)})
            self.register_buffer("running", torch.arange(2.0))
            self.register_buffer("steps", torch.tensor(3))
            self.register_buffer("scratch", torch.zeros(5), persistent=False)

        def forward(self, x):
            x = self.embed(x)
            for blk in self.blocks:
                x = blk(x)
            x = self.head(x) + self.running
            return self.heads["b"](x)

    return TNet()


def test_named_parameters_and_buffers_match_torch(backend, torch):
    net, tnet = Net(), torch_net(torch)
    ours = [(n, p.shape) for n, p in net.named_parameters()]
    theirs = [(n, tuple(p.shape)) for n, p in tnet.named_parameters()]
    assert ours == theirs
    assert [n for n, _ in net.named_buffers()] == [n for n, _ in tnet.named_buffers()]
    assert len(list(net.parameters())) == len(list(tnet.parameters()))
    assert [n for n, _ in net.named_modules()] == [n for n, _ in tnet.named_modules()]
    assert [n for n, _ in net.named_children()] == [n for n, _ in tnet.named_children()]
    assert [n for n, _ in net.blocks[0].named_parameters(prefix="blocks.0")] == \
        [n for n, _ in tnet.blocks[0].named_parameters(prefix="blocks.0")]
    assert [n for n, _ in net.named_parameters(recurse=False)] == []


def test_state_dict_keys_and_shapes_match_torch(backend, torch):
    net, tnet = Net(), torch_net(torch)
    sd, tsd = net.state_dict(), tnet.state_dict()
    assert list(sd) == list(tsd)
    assert [tuple(v.shape) for v in sd.values()] == [tuple(v.shape) for v in tsd.values()]
    assert "scratch" not in sd  # non-persistent buffer
    assert sd["embed.weight"] is net.embed.weight.data  # by reference, as torch


@pytest.mark.parametrize("as_tensors", [False, True], ids=["numpy", "torch_tensors"])
def test_torch_state_dict_loads_and_gives_identical_outputs(backend, torch, as_tensors):
    torch.manual_seed(0)
    tnet = torch_net(torch).double()
    net = Net().to(dtype="float64")
    tsd = tnet.state_dict()
    given = dict(tsd) if as_tensors else {k: v.numpy() for k, v in tsd.items()}
    result = net.load_state_dict(given)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(host(v), tsd[k].numpy(), err_msg=k)
        assert nnx.to_numpy(v).dtype == tsd[k].numpy().dtype, k
    x = rand(5, 3, seed=1)
    assert_close(net(x), tnet(torch.tensor(host(x))), rtol=1e-12, atol=1e-13, what="output after loading")
    # the loaded arrays are copies: changing the source does not change the model
    with torch.no_grad():
        tnet.embed.weight.zero_()
    assert np.any(host(net.embed.weight.data) != 0)


def test_nnx_state_dict_loads_into_torch(backend, torch):
    net, tnet = Net(), torch_net(torch)
    tnet.load_state_dict({k: torch.from_numpy(host(v).copy()) for k, v in net.state_dict().items()})
    x = rand(4, 3, seed=2, dtype="float32")
    assert_close(net(x), tnet(torch.tensor(host(x))), rtol=1e-5, atol=1e-6, what="torch output")


def test_shared_module_state_dict_matches_torch(backend, torch):
    """torch lists a module shared by two parents under both names (tied weights); nnx must too."""
    shared = nnx.Linear(3, 3)
    model = nnx.Sequential(shared, nnx.Tanh(), shared)
    tshared = torch.nn.Linear(3, 3)
    tmodel = torch.nn.Sequential(tshared, torch.nn.Tanh(), tshared)
    assert list(model.state_dict()) == list(tmodel.state_dict())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    model.load_state_dict({k: v.numpy() for k, v in tmodel.state_dict().items()})
    x = rand(2, 3, dtype="float32")
    assert_close(model(x), tmodel(torch.tensor(host(x))), rtol=1e-5, atol=1e-6, what="tied output")


def test_load_state_dict_strict_errors_and_non_strict_result(backend, torch):
    net = Net()
    sd = {k: host(v) for k, v in net.state_dict().items()}
    del sd["head.0.bias"], sd["running"]
    sd["extra.weight"] = np.zeros(2)
    sd["blocks.5.scale"] = np.zeros(4)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    assert "Net.load_state_dict" in msg
    assert "missing keys ['running', 'head.0.bias']" in msg  # state_dict order
    assert "unexpected keys ['blocks.5.scale', 'extra.weight']" in msg
    assert "strict=False" in msg
    before = host(net.embed.weight.data).copy()
    sd["embed.weight"] = sd["embed.weight"] + 1.0
    result = net.load_state_dict(sd, strict=False)
    assert isinstance(result, nnx.IncompatibleKeys)
    assert result.missing_keys == ["running", "head.0.bias"]
    assert sorted(result.unexpected_keys) == ["blocks.5.scale", "extra.weight"]
    np.testing.assert_allclose(host(net.embed.weight.data), before + 1.0, rtol=1e-6)
    # torch reports the same key lists
    tnet = torch_net(torch)
    tres = tnet.load_state_dict({k: torch.tensor(v) for k, v in sd.items() if k in tnet.state_dict()} |
                                {"extra.weight": torch.zeros(2), "blocks.5.scale": torch.zeros(4)}, strict=False)
    assert sorted(tres.missing_keys) == sorted(result.missing_keys)
    assert sorted(tres.unexpected_keys) == sorted(result.unexpected_keys)


@pytest.mark.parametrize("bad", ["shape", "dtype", "not_array"])
def test_failed_load_leaves_model_unchanged(backend, bad):
    net = Net()
    before = {k: host(v).copy() for k, v in net.state_dict().items()}
    sd = {k: v + 1 for k, v in before.items()}
    if bad == "shape":
        sd["heads.b.bias"] = np.zeros(4)  # the last parameter: all earlier ones would already be assigned
        err, match = ValueError, r"'heads.b.bias' has shape \(4,\) in the state dict but \(3,\) in the model"
    elif bad == "dtype":
        sd["heads.b.bias"] = np.zeros(3, dtype=np.int64)
        err, match = TypeError, "'heads.b.bias' has dtype int64 but the model expects float32"
    else:
        sd["heads.b.bias"] = "three numbers"
        err, match = (TypeError, ValueError), "heads.b.bias"
    with pytest.raises(err, match=match):
        net.load_state_dict(sd)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(host(v), before[k], err_msg=f"{k} changed by a failed load")


def test_load_state_dict_converts_dtype_and_backend(backend):
    net = Net()
    sd = {k: (np.asarray(host(v), dtype=np.float64) if host(v).dtype.kind == "f" else host(v))
          for k, v in net.state_dict().items()}
    net.load_state_dict(sd)
    for k, v in net.state_dict().items():
        assert registry.backend_of(v) is backend, k
    assert str(net.embed.weight.dtype).endswith("float32")
    assert "int" in str(net.steps.dtype)


# ----------------------------------------------------------------------------- modes, grads, recording
def test_train_eval_propagate(backend):
    net = Net()
    assert net.training and all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not net.blocks[1].fc.training


def test_eval_and_no_grad_record_nothing(backend):
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.ReLU(), nnx.Linear(4, 2))
    x = rand(2, 3, dtype="float32")
    with nnx.no_grad():
        assert not nnx.is_grad_enabled()
        y = model(x)
        with nnx.enable_grad():
            assert nnx.is_grad_enabled()
    assert nnx.is_grad_enabled()
    assert all(len(m._tape) == 0 for m in model.modules()), "no_grad kept activations"
    with pytest.raises(nnx.NotRecordedError) as info:
        model.backward(nnx.asarray(np.ones((2, 2)), dtype="float32"))
    msg = str(info.value)
    assert "Linear.backward" in msg and "no_grad" in msg and "model.train()" in msg
    assert tuple(y.shape) == (2, 2)

    @nnx.no_grad()
    def infer(v):
        return model(v)

    infer(x)
    assert all(len(m._tape) == 0 for m in model.modules())
    model.eval()
    model(x)
    assert all(len(m._tape) == 0 for m in model.modules())
    with pytest.raises(nnx.NotRecordedError):
        model.backward(nnx.asarray(np.ones((2, 2)), dtype="float32"))


def test_zero_grad_and_requires_grad(backend):
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.Tanh(), nnx.Linear(4, 2))
    x = rand(5, 3, dtype="float32")
    model(x)
    model.backward(rand(5, 2, dtype="float32"))
    assert all(p.grad is not None for p in model.parameters())
    model(x)  # a recorded pass left on the tape
    model.zero_grad(set_to_none=False)
    assert all(np.all(host(p.grad) == 0) for p in model.parameters())
    assert all(len(m._tape) == 0 for m in model.modules()), "zero_grad drops recorded passes"
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    model(x)
    model.backward(rand(5, 2, dtype="float32"))
    assert all(p.grad is None for p in model.parameters())


def test_gradients_accumulate_over_two_backward_passes(backend):
    model = nnx.Sequential(nnx.Linear(3, 2, dtype="float64"))
    x, dy = rand(4, 3), rand(4, 2, seed=1)
    model(x)
    model.backward(dy)
    g1 = host(model[0].weight.grad).copy()
    model(x)
    model.backward(dy)
    np.testing.assert_allclose(host(model[0].weight.grad), 2 * g1, rtol=1e-14)


# ----------------------------------------------------------------------------- backend, device, dtype
OTHER = {"numpy": "torch", "torch": "array_api_strict", "array_api_strict": "numpy", "cupy": "numpy"}


def test_to_other_backend_moves_params_buffers_and_grads(backend):
    target = OTHER.get(backend.name, "numpy")  # plug-in backends (NNX_TEST_BACKENDS) move to NumPy
    if nnx.available_backends().get(target) is not True:
        pytest.skip(f"{target} not available")
    net = Net()
    x = rand(2, 3, dtype="float32")
    for p in list(net.parameters())[::2]:
        p.grad = p.data * 2.0
    before = {k: host(v).copy() for k, v in net.state_dict().items()}
    grads = {n: host(p.grad).copy() for n, p in net.named_parameters() if p.grad is not None}
    assert net.to(target) is net
    tb = registry.get(target)
    assert net.backend is tb
    for k, v in net.state_dict().items():
        assert tb.owns(v), f"{k} did not move to {target}"
        np.testing.assert_array_equal(host(v), before[k])
    for n, p in net.named_parameters():
        if n in grads:
            assert tb.owns(p.grad), f"gradient of {n} did not move"
            np.testing.assert_array_equal(host(p.grad), grads[n])
    assert tb.owns(net.scratch), "non-persistent buffers move too"
    y = net(nnx.asarray(host(x), backend=target))
    assert tb.owns(y)
    # and back, with a dtype change at the same time
    net.to(backend.name, dtype="float64")
    assert net.backend is backend
    assert all(str(p.dtype).endswith("float64") for p in net.parameters())
    assert "int" in str(net.steps.dtype), "integer buffers keep their dtype"


def test_to_dtype_and_double_float(backend):
    model = nnx.Sequential(nnx.Linear(3, 2))
    x = rand(4, 3, dtype="float32")
    model(x)
    model.backward(rand(4, 2, dtype="float32"))
    w = host(model[0].weight.data).copy()
    model.to(dtype="float64")
    assert str(model[0].weight.dtype).endswith("float64") and str(model[0].weight.grad.dtype).endswith("float64")
    np.testing.assert_array_equal(host(model[0].weight.data), w.astype(np.float64))
    assert all(len(m._tape) == 0 for m in model.modules())
    y = model(rand(4, 3, dtype="float64"))
    assert str(y.dtype).endswith("float64")
    model.float()
    assert str(model[0].bias.dtype).endswith("float32")
    model.double()
    assert str(model[0].bias.dtype).endswith("float64")
    with pytest.raises(ValueError, match="Sequential.to: dtype must be a floating dtype name, got 'int32'"):
        model.to(dtype="int32")


def test_strict_device_move(backend):
    if backend.name != "array_api_strict":
        pytest.skip("array_api_strict offers a second device")
    model = nnx.Sequential(nnx.Linear(3, 2))
    model.to(device="device1")
    assert all("device1" in str(p.data.device) for p in model.parameters())
    x = nnx.asarray(np.ones((1, 3)), device="device1")
    assert "device1" in str(model(x).device)


# ----------------------------------------------------------------------------- repr, summary, containers
def test_repr_matches_torch(torch):
    model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2, bias=False))
    tmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2, bias=False))
    assert repr(model) == repr(tmodel)
    nested = nnx.Sequential(OrderedDict(enc=nnx.Sequential(nnx.Linear(2, 2), nnx.Tanh()), out=nnx.Identity()))
    tnested = torch.nn.Sequential(OrderedDict(enc=torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh()),
                                              out=torch.nn.Identity()))
    assert repr(nested) == repr(tnested)
    assert repr(nnx.Parameter(nnx.asarray(np.zeros((2, 3))))) == "Parameter(shape=(2, 3), dtype=float32)"


def test_summary(backend):
    model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Flatten(), nnx.Linear(8, 3, bias=False))
    model[0].bias.requires_grad = False
    lines = []
    out = nnx.summary(model, (4,), batch_size=2, print_fn=lines.append)
    assert out["total_params"] == 4 * 8 + 8 + 8 * 3
    assert out["trainable_params"] == 4 * 8 + 8 * 3
    assert [(n, t, s, k) for n, t, s, k in out["layers"]] == [
        ("0", "Linear", (2, 8), 40), ("1", "ReLU", (2, 8), 0), ("2", "Flatten", (2, 8), 0),
        ("3", "Linear", (2, 3), 24)]
    text = lines[0]
    assert "Total params: 64" in text and "Trainable params: 56" in text and "Non-trainable params: 8" in text
    assert "0 (Linear)" in text and "(2, 8)" in text
    assert model.training and all(len(m._tape) == 0 for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules()), "summary removes its hooks"


def test_sequential_indexing_and_slicing(backend, torch):
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.ReLU(), nnx.Linear(4, 2))
    tmodel = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert len(model) == 3
    assert model[0] is list(model)[0] and model[-1] is model[2]
    tail = model[1:]
    assert isinstance(tail, nnx.Sequential) and len(tail) == 2 and tail[1] is model[2]
    assert list(tail.state_dict()) == list(tmodel[1:].state_dict()), "slices keep the original names as torch"
    x = rand(2, 3, dtype="float32")
    h = model[0](x)
    y = tail(h)
    np.testing.assert_array_equal(host(y), host(model(x)))
    dh = tail.backward(nnx.asarray(np.ones((2, 2)), dtype="float32"))
    assert tuple(dh.shape) == (2, 4)
    model.append(nnx.Tanh())
    assert len(model) == 4 and isinstance(model[3], nnx.Tanh)
    assert tuple(model(x).shape) == (2, 2)
    with pytest.raises(TypeError, match="Sequential: argument 1 is a int, not a Module"):
        nnx.Sequential(nnx.ReLU(), 3)
    with pytest.raises(IndexError):
        model[7]


def test_module_list_and_dict(backend):
    layers = nnx.ModuleList([nnx.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and layers[-1] is list(layers)[2]
    layers.append(nnx.ReLU()).extend([nnx.Tanh()])
    assert len(layers) == 5 and [n for n, _ in layers.named_children()] == ["0", "1", "2", "3", "4"]
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    d = nnx.ModuleDict({"enc": nnx.Linear(2, 3)})
    d["dec"] = nnx.Linear(3, 2)
    assert "enc" in d and "x" not in d and len(d) == 2
    assert list(d) == ["enc", "dec"] and list(d.keys()) == ["enc", "dec"]
    assert [type(m).__name__ for m in d.values()] == ["Linear", "Linear"]
    assert [k for k, _ in d.items()] == ["enc", "dec"]
    assert list(d.state_dict()) == ["enc.weight", "enc.bias", "dec.weight", "dec.bias"]


def test_attribute_registry_rules(backend):
    class Bad(nnx.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match=r"Bad: call super\(\).__init__\(\) before assigning attributes"):
        Bad()
    layer = nnx.Linear(2, 2)
    with pytest.raises(TypeError, match="Linear: cannot assign a .* to parameter 'weight'"):
        layer.weight = rand(2, 2)
    with pytest.raises(AttributeError, match="'Linear' object has no attribute 'nope'"):
        _ = layer.nope
    layer.bias = None
    assert list(layer.state_dict()) == ["weight"]
    del layer.weight
    assert list(layer.state_dict()) == []
    hooks = []
    remove = layer.register_forward_hook(lambda m, inp, out: hooks.append(m))
    layer.weight = nnx.Parameter(nnx.asarray(np.eye(2)))
    layer(nnx.asarray(np.ones((1, 2))))
    remove()
    layer(nnx.asarray(np.ones((1, 2))))
    assert hooks == [layer]


def test_failed_to_leaves_model_unchanged(backend):
    """A conversion that fails part-way (a dtype the target lacks) must not leave buffers converted."""
    if backend.name == "array_api_strict":
        pytest.skip("the failing conversion targets array_api_strict (it has no float16)")

    class Counted(nnx.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", nnx.asarray(np.array([3])))  # converts fine: moves first
            self.fc = nnx.Linear(2, 2)  # fails: no float16 on the target

    net = Counted()
    before = {k: (type(v), str(v.dtype)) for k, v in net.state_dict().items()}
    with pytest.raises(TypeError, match="backend 'array_api_strict' has no dtype 'float16'"):
        net.to("array_api_strict", dtype="float16")
    assert {k: (type(v), str(v.dtype)) for k, v in net.state_dict().items()} == before
    assert net.backend is backend


def test_zero_grad_without_none_gives_exact_zeros(backend):
    """set_to_none=False zeroes gradients even when they hold inf or NaN (as torch's zero_())."""
    model = nnx.Sequential(nnx.Linear(2, 2))
    opt = nnx.optim.SGD(model.parameters(), lr=0.1)
    for zero in (model.zero_grad, opt.zero_grad):
        for p in model.parameters():
            p.grad = nnx.asarray(np.full(p.shape, np.inf))
        zero(set_to_none=False)
        for p in model.parameters():
            np.testing.assert_array_equal(host(p.grad), 0.0)
            assert p.grad.dtype == p.data.dtype


def test_module_list_slice_is_a_module_list(backend, torch):
    layers = nnx.ModuleList([nnx.Linear(2, 2), nnx.ReLU(), nnx.Linear(2, 3)])
    part = layers[1:]
    tpart = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 3)])[1:]
    assert type(part) is nnx.ModuleList and len(part) == 2 and part[1] is layers[2]
    assert [n for n, _ in part.named_parameters()] == [n for n, _ in tpart.named_parameters()]


def test_tied_parameter_between_two_layers_matches_torch(backend, torch):
    """``dec.weight = enc.weight`` (tied embeddings): one Parameter, gradients of both uses added, both keys in
    the state_dict, as torch."""

    class AutoEncoder(nnx.Module):
        def __init__(self):
            super().__init__()
            self.enc = nnx.Linear(3, 3, dtype="float64")
            self.act = nnx.Tanh()
            self.dec = nnx.Linear(3, 3, bias=False, dtype="float64")
            self.dec.weight = self.enc.weight

        def forward(self, x):
            return self.dec(self.act(self.enc(x)))

        def backward(self, grad_output, input_grad=True):
            return self.enc.backward(self.act.backward(self.dec.backward(grad_output)), input_grad=input_grad)

    model = AutoEncoder()
    tenc, tdec = torch.nn.Linear(3, 3).double(), torch.nn.Linear(3, 3, bias=False).double()
    tdec.weight = tenc.weight
    tmodel = torch.nn.ModuleDict({"enc": tenc, "act": torch.nn.Tanh(), "dec": tdec})
    assert list(model.state_dict()) == list(tmodel.state_dict()) == ["enc.weight", "enc.bias", "dec.weight"]
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tmodel.named_parameters()]
    tmodel.load_state_dict({k: torch.tensor(host(v)) for k, v in model.state_dict().items()})
    x, dy = rand(4, 3, seed=1), rand(4, 3, seed=2)
    y = model(x)
    dx = model.backward(dy)
    tx = torch.tensor(host(x), requires_grad=True)
    ty = tdec(torch.tanh(tenc(tx)))
    ty.backward(torch.tensor(host(dy)))
    assert_close(y, ty, what="output")
    assert_close(dx, tx.grad, rtol=1e-12, atol=1e-13, what="input gradient")
    assert_close(model.enc.weight.grad, tenc.weight.grad, rtol=1e-12, atol=1e-13, what="tied weight gradient")
    assert nnx.gradcheck(model, rand(2, 3, seed=3))


def test_reassigned_parameter_keeps_its_place(backend, torch):
    layer = nnx.Linear(2, 3, dtype="float64")
    layer.weight = nnx.Parameter(rand(3, 2, seed=4))
    tlayer = torch.nn.Linear(2, 3)
    tlayer.weight = torch.nn.Parameter(torch.zeros(3, 2))
    assert list(layer.state_dict()) == list(tlayer.state_dict()) == ["weight", "bias"]
    layer(rand(5, 2))
    layer.backward(rand(5, 3, seed=1))
    assert layer.weight.grad.shape == (3, 2) and layer.bias.grad.shape == (3,)
    assert nnx.gradcheck(layer, rand(2, 2, seed=2))


def test_grad_mode_forms_and_threads(backend):
    model = nnx.Linear(2, 2)

    @nnx.no_grad
    def bare(v):
        assert not nnx.is_grad_enabled()
        return model(v)

    bare(nnx.asarray(np.ones((1, 2))))
    assert nnx.is_grad_enabled() and len(model._tape) == 0
    ng = nnx.no_grad()
    with ng:
        with ng:  # one instance entered twice
            assert not nnx.is_grad_enabled()
        assert not nnx.is_grad_enabled()
    assert nnx.is_grad_enabled()

    import threading
    inside, checked = threading.Event(), threading.Event()
    seen = []

    def holder():
        with nnx.no_grad():
            inside.set()
            checked.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    inside.wait(5)
    seen.append(nnx.is_grad_enabled())  # another thread's no_grad does not reach this one
    checked.set()
    t.join()
    assert seen == [True]


def test_repr_with_extra_and_children_matches_torch(torch):
    class Wrapper(nnx.Module):
        def __init__(self):
            super().__init__()
            self.inner = nnx.Linear(2, 2)
            self.missing = None
            self.add_module("empty", None)

        def extra_repr(self):
            return "scale=2.0\nmode='x'"

    class TWrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Linear(2, 2)
            self.add_module("empty", None)

        def extra_repr(self):
            return "scale=2.0\nmode='x'"

    TWrapper.__name__ = "Wrapper"
    assert repr(Wrapper()) == repr(TWrapper())
    assert repr(nnx.Sequential()) == repr(torch.nn.Sequential()) == "Sequential()"


# ----------------------------------------------------------------------------- record: gradients by name
class _BiasFirst(nnx.Module):
    """A leaf op whose parameters are registered bias first: gradients must still pair by name."""

    def __init__(self):
        super().__init__()
        self.bias = nnx.Parameter(nnx.asarray(np.zeros(2), dtype="float64"))
        self.weight = nnx.Parameter(nnx.asarray(np.ones((2, 3)), dtype="float64"))

    def forward(self, x):
        y, backward = F.linear_forward(x, self.weight.data, self.bias.data)
        return self.record(y, backward, params=("weight", "bias"))


def test_record_pairs_gradients_by_name_not_registration_order(backend):
    m = _BiasFirst()
    x = rand(4, 3, dtype="float64")
    m(x)
    m.backward(nnx.asarray(np.ones((4, 2)), dtype="float64"))
    assert m.weight.grad.shape == (2, 3) and m.bias.grad.shape == (2,)
    np.testing.assert_allclose(host(m.bias.grad), [4.0, 4.0])
    np.testing.assert_allclose(host(m.weight.grad), np.tile(host(x).sum(0), (2, 1)))


def test_record_refuses_a_gradient_count_that_does_not_match_the_names(backend):
    class Wrong(_BiasFirst):
        def forward(self, x):
            y, backward = F.linear_forward(x, self.weight.data, self.bias.data)
            return self.record(y, backward, params=("weight",))

    m = Wrong()
    m(rand(4, 3, dtype="float64"))
    with pytest.raises(RuntimeError, match=r"Wrong.backward: the recorded op returned 2 parameter gradients for "
                                           r"the 1 parameters it was recorded with \('weight',\)"):
        m.backward(nnx.asarray(np.ones((4, 2)), dtype="float64"))


def test_record_refuses_an_unknown_parameter_name(backend):
    class Typo(_BiasFirst):
        def forward(self, x):
            y, backward = F.linear_forward(x, self.weight.data, self.bias.data)
            return self.record(y, backward, params=("weights", "bias"))

    with pytest.raises(KeyError, match="'weights' is not a parameter of this module"):
        Typo()(rand(4, 3, dtype="float64"))


def test_composite_without_backward_names_the_cause(backend):
    class TwoLayers(nnx.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nnx.Linear(3, 3), nnx.Linear(3, 1)

        def forward(self, x):
            return self.b(self.a(x))

    m = TwoLayers()
    m(rand(2, 3, dtype="float32"))
    with pytest.raises(nnx.NotRecordedError, match="TwoLayers.backward: this module has child modules but no "
                                                   "backward of its own"):
        m.backward(nnx.asarray(np.ones((2, 1), dtype=np.float32)))


# ----------------------------------------------------------------------------- output gradients are checked
@pytest.mark.parametrize("bad", ["broadcast", "shape", "dtype", "list", "other_backend"])
def test_a_wrong_output_gradient_is_refused_before_anything_changes(backend, bad):
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.ReLU(), nnx.Linear(4, 2))
    y = model(rand(5, 3, dtype="float32"))
    good = np.ones(tuple(y.shape), dtype=np.float32)
    dy, match, err = {
        "broadcast": (nnx.asarray(good[:1]), r"Linear.backward: the output gradient has shape \(1, 2\), but the "
                                             r"output it belongs to has shape \(5, 2\)", ValueError),
        "shape": (nnx.asarray(good.T), r"has shape \(2, 5\)", ValueError),
        "dtype": (nnx.asarray(good, dtype="float64"), "the output gradient has dtype float64, but the output has "
                                                       "dtype float32", TypeError),
        "list": (good.tolist(), "expected the gradient of the output as an array of shape", TypeError),
        "other_backend": (good, "the output gradient is a numpy array", nnx.BackendMismatchError),
    }[bad]
    if bad == "other_backend" and backend.name == "numpy":
        pytest.skip("a NumPy array is this backend's own array type")
    with pytest.raises(err, match=match):
        model.backward(dy)
    assert all(p.grad is None for p in model.parameters()), "no gradient was written"
    assert all(len(m._tape) == 1 for m in model), "no record was consumed"
    model.backward(nnx.asarray(good))  # the right gradient still works afterwards
    assert all(p.grad is not None for p in model.parameters())


def test_a_child_put_in_eval_between_forward_and_backward_changes_nothing(backend):
    model = nnx.Sequential(nnx.Linear(3, 4), nnx.Sequential(nnx.Tanh(), nnx.Linear(4, 4)), nnx.Linear(4, 2))
    y = model(rand(5, 3, dtype="float32"))
    model[1][1].eval()  # drops its record
    with pytest.raises(nnx.NotRecordedError,
                       match=r"Linear.backward: no recorded forward pass to differentiate \(at Sequential.1.1\)"):
        model.backward(nnx.asarray(np.ones(tuple(y.shape), dtype=np.float32)))
    assert all(p.grad is None for p in model.parameters()), "no layer wrote a gradient"
