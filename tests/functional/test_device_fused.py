"""Layers, losses and optimizers on their device-shaped formulation (the adapter's fused kernels,
forced on with ``DEVICE_PATHS = "always"``): the same numbers as PyTorch and as their CPU-shaped
formulation on every backend, float64 gradchecks, and the same refusals."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host


@pytest.fixture
def device_paths(monkeypatch):
    """Every kernel takes its device-shaped formulation, whatever the backend."""
    monkeypatch.setattr(F._device, "DEVICE_PATHS", "always")


CE_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(weighted=True),
    dict(weighted=True, ignore_index=1),
    dict(label_smoothing=0.2),
    dict(label_smoothing=0.1, weighted=True, ignore_index=2, reduction="none"),
    dict(spatial=True, weighted=True),
]


def _ce_inputs(case: dict, rng: np.random.Generator) -> tuple:
    shape = (4, 5, 3, 2) if case.get("spatial") else (6, 5)
    logits = rng.standard_normal(shape)
    target = rng.integers(0, 5, size=(shape[0],) + shape[2:])
    if "ignore_index" in case:
        target.reshape(-1)[::3] = case["ignore_index"]
    weight = rng.uniform(0.5, 2.0, size=5) if case.get("weighted") else None
    kwargs = {k: v for k, v in case.items() if k in ("reduction", "ignore_index", "label_smoothing")}
    return logits, target, weight, kwargs


CE_IDS = [",".join(f"{k}={v}" for k, v in c.items()) or "plain" for c in CE_CASES]


@pytest.mark.parametrize("case", CE_CASES, ids=CE_IDS)
def test_fused_cross_entropy_matches_torch(backend, torch, device_paths, case):
    logits, target, weight, kwargs = _ce_inputs(case, np.random.default_rng(0))
    w = None if weight is None else nnx.asarray(weight, dtype="float64")
    loss_fn = nnx.CrossEntropyLoss(weight=w, **kwargs)
    loss = loss_fn(nnx.asarray(logits, dtype="float64"), nnx.asarray(target, dtype="int64"))
    tx = torch.tensor(logits, requires_grad=True)
    tw = None if weight is None else torch.tensor(weight)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(target), weight=tw, **kwargs)
    assert_close(loss, tloss.detach(), rtol=1e-12, atol=1e-12, what="loss")
    g = np.random.default_rng(1).standard_normal(tuple(tloss.shape))
    tloss.backward(torch.tensor(g))
    dx = loss_fn.backward(nnx.asarray(g, dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-12, atol=1e-12, what="input gradient")


@pytest.mark.parametrize("case", CE_CASES[:6], ids=[str(i) for i in range(6)])
def test_fused_cross_entropy_gradcheck(backend, device_paths, case):
    logits, target, weight, kwargs = _ce_inputs(case, np.random.default_rng(2))
    t = nnx.asarray(target, dtype="int64")
    w = None if weight is None else nnx.asarray(weight, dtype="float64")
    assert nnx.gradcheck(lambda z: F.cross_entropy_forward(z, t, w, **kwargs), nnx.asarray(logits, dtype="float64"))


def test_fused_cross_entropy_keeps_float32_and_refuses_bad_targets(backend, device_paths):
    loss_fn = nnx.CrossEntropyLoss()
    z = nnx.asarray(np.random.default_rng(0).standard_normal((3, 4)), dtype="float32")
    assert host(loss_fn(z, nnx.asarray([0, 1, 3], dtype="int64"))).dtype == np.float32
    assert host(loss_fn.backward()).dtype == np.float32
    with pytest.raises(ValueError, match="cross_entropy: target has 2 elements but input has 3 rows"):
        F.cross_entropy(z, nnx.asarray([0, 1], dtype="int64"))
    with pytest.raises(ValueError, match=r"target class indices must be in \[0, 4\)"):
        F.cross_entropy(z, nnx.asarray([0, 1, 4], dtype="int64"))
    with pytest.raises(ValueError, match="weight must have one entry per class"):
        F.cross_entropy(z, nnx.asarray([0, 1, 2], dtype="int64"), weight=nnx.asarray([1.0, 2.0]))


OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.9))),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
def test_multi_tensor_optimizer_step_matches_torch(backend, torch, device_paths, name, kwargs):
    """One launch per group: several shapes, and a parameter that joins one step late (its own step
    count and a fresh momentum buffer while the others have theirs)."""
    if not backend.mutable:
        pytest.skip("the multi-tensor kernels update in place (immutable backends take the per-parameter path)")
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 3, 2)]
    init = [rng.standard_normal(s) for s in shapes]
    params = [nnx.Parameter(nnx.asarray(w.copy(), dtype="float64")) for w in init]
    tparams = [torch.tensor(w.copy(), requires_grad=True) for w in init]
    opt = getattr(nnx.optim, name)(params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for step in range(4):
        for i, (p, tp) in enumerate(zip(params, tparams)):
            if step == 0 and i == 2:  # no gradient on the first step: torch skips it, so must nnx
                p.grad, tp.grad = None, None
                continue
            g = rng.standard_normal(shapes[i])
            p.grad, tp.grad = nnx.asarray(g, dtype="float64"), torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(params, tparams):
            assert_close(p.data, tp.detach(), rtol=1e-12, atol=1e-12, what=f"{name} step {step}")


def test_multi_tensor_path_is_one_kernel_per_group():
    """The launch meter sees the group's update as one adapter call (2 launches: table + kernel)."""
    b = nnx.launches.counting_backend()
    with nnx.use_backend(b):
        params = [nnx.Parameter(nnx.asarray(np.zeros((4, 3)), dtype="float32")) for _ in range(5)]
        opt = nnx.optim.Adam(params, lr=0.1)
        for p in params:
            p.grad = nnx.asarray(np.ones((4, 3)), dtype="float32")
        opt.step()
        with nnx.count_launches() as n:
            opt.step()
    assert dict(n.by_op) == {"adapter.adam_multi_step_": 2}, n


ACTS = [("ReLU", {}), ("Tanh", {}), ("Sigmoid", {}), ("SiLU", {}), ("GELU", {}), ("GELU", {"approximate": "tanh"})]


@pytest.mark.parametrize("act,kw", ACTS, ids=[a + ("-tanh" if k else "") for a, k in ACTS])
def test_sequential_fuses_linear_and_activation(backend, torch, device_paths, act, kw):
    """Linear + activation inside a Sequential run as one product and one fused kernel on the device
    path; output, input gradient and parameter gradients equal PyTorch's, 3-D input included."""
    nnx.manual_seed(0)
    model = nnx.Sequential(nnx.Linear(5, 4), getattr(nnx, act)(**kw), nnx.Linear(4, 3))
    tmodel = torch.nn.Sequential(torch.nn.Linear(5, 4), getattr(torch.nn, act)(**kw), torch.nn.Linear(4, 3)).double()
    model.double()
    for shape in ((6, 5), (2, 3, 5)):
        x = np.random.default_rng(1).standard_normal(shape)
        with torch.no_grad():
            for p, tp in zip(model.parameters(), tmodel.parameters()):
                tp.copy_(torch.from_numpy(host(p.data)))
                tp.grad = None
            model.zero_grad()
        tx = torch.tensor(x, requires_grad=True)
        ty = tmodel(tx)
        y = model(nnx.asarray(x, dtype="float64"))
        assert_close(y, ty.detach(), rtol=1e-12, atol=1e-12, what="output")
        dy = np.random.default_rng(2).standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(dy))
        dx = model.backward(nnx.asarray(dy, dtype="float64"))
        assert_close(dx, tx.grad, rtol=1e-12, atol=1e-12, what="input gradient")
        for (name, p), tp in zip(model.named_parameters(), tmodel.parameters()):
            assert_close(p.grad, tp.grad, rtol=1e-12, atol=1e-12, what=name)


def test_fusion_is_taken_and_skipped_where_it_must_be(monkeypatch):
    """On the launch meter's backend the pair costs matmul + one kernel; a forward hook on either
    child turns the fusion off (the hook must see the activation's own call)."""
    b = nnx.launches.counting_backend()
    with nnx.use_backend(b):
        nnx.manual_seed(0)
        model = nnx.Sequential(nnx.Linear(4, 3), nnx.ReLU())
        x = nnx.asarray(np.ones((2, 4)), dtype="float32")
        with nnx.count_launches() as n:
            model(x)
        assert dict(n.by_op) == {"adapter.matmul": 1, "adapter.bias_act_forward": 1}, n
        seen = []
        model[1].register_forward_hook(lambda m, inp, out: seen.append(out))
        with nnx.count_launches() as n:
            model(x)
        assert len(seen) == 1 and "adapter.bias_act_forward" in n.by_op and "add" in n.by_op, n
        model.clear_tape()


def test_fused_pair_in_eval_mode_records_nothing(backend, device_paths):
    model = nnx.Sequential(nnx.Linear(4, 3), nnx.Tanh()).eval()
    model(nnx.asarray(np.ones((2, 4)), dtype="float32"))
    assert not model[0]._tape and not model[1]._tape


@pytest.mark.parametrize("act", ["ReLU", "Sigmoid", "Tanh"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_adapter_fuses_the_activations_its_kernels_run(monkeypatch, act, dtype):
    """On NumPy (CPU-shaped) a Sequential fuses Linear with the activations the host kernels run
    (``fast_activations``: one product and one bias-and-activation task instead of a NumPy bias add
    and a second task) and with no other; fused or not, output and every gradient are bit-identical."""
    import nnx_backends

    b = nnx_backends.get("numpy")
    monkeypatch.setattr(F._device, "DEVICE_PATHS", "never")  # the CPU-shaped formulation (CI also runs "always")
    calls = []
    real = F.linear_act_forward
    monkeypatch.setattr(F, "linear_act_forward", lambda *a: calls.append(a[3]) or real(*a))
    with nnx.use_backend(b):
        nnx.manual_seed(0)
        model = nnx.Sequential(nnx.Linear(40, 300), getattr(nnx, act)(), nnx.Linear(300, 7))
        if dtype == "float64":
            model.double()
        rng = np.random.default_rng(1)
        x = np.asarray(rng.standard_normal((64, 40)), dtype=dtype)
        dy = np.asarray(rng.standard_normal((64, 7)), dtype=dtype)
        y = model(x)
        dx = model.backward(dy)
        grads = [np.array(p.grad) for p in model.parameters()]
        assert calls == ([act.lower()] if act.lower() in b.fast_activations() else []), calls
        model.zero_grad()
        y2 = model[2](model[1](model[0](x)))  # each child on its own: never fused
        dx2 = model[0].backward(model[1].backward(model[2].backward(dy)))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(dx, dx2)
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(g, p.grad)
