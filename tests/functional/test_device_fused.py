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
