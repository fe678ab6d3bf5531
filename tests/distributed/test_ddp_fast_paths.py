"""DistributedDataParallel's fast paths in one process, with a fake world of two ranks whose other
rank holds the same gradients (the all-reduce doubles every message): the averaged gradients must
then equal the local ones bit for bit, whichever path (in-place large gradients or packed buckets)
computed them."""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx import distributed as dist
from nnx import parallel
from nnx.parallel import DistributedDataParallel


@pytest.fixture
def twin_world(monkeypatch):
    """World size 2; every host all-reduce doubles its buffer in place and is recorded."""
    sent = []

    def all_reduce_host(buf, op="sum"):
        sent.append((buf, buf.size))
        buf *= 2
        return buf

    monkeypatch.setitem(dist._state, "comm", dist.MirrorComm())
    monkeypatch.setattr(dist, "all_reduce_host", all_reduce_host)
    return sent


def _mlp():
    nnx.manual_seed(0)
    return nnx.Sequential(nnx.Linear(20, 16), nnx.ReLU(), nnx.Linear(16, 3))


def _local_grads(model, x, y, passes=1):
    loss_fn = nnx.CrossEntropyLoss()
    for _ in range(passes):
        loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
    return [nnx.to_numpy(p.grad).copy() for p in model.parameters()]


def _data():
    rng = np.random.default_rng(1)
    return nnx.asarray(rng.standard_normal((6, 20)).astype("float32")), nnx.asarray(rng.integers(0, 3, 6))


def _ddp_step(ddp, x, y, input_grad=False):
    loss_fn = nnx.CrossEntropyLoss()
    loss_fn(ddp(x), y)
    return ddp.backward(loss_fn.backward(), input_grad=input_grad)


@pytest.mark.parametrize("direct_bytes", [0, 10**9], ids=["in-place", "packed"])
def test_averaged_gradients_equal_the_local_ones_bit_for_bit(backend, twin_world, monkeypatch, direct_bytes):
    monkeypatch.setattr(parallel, "_DIRECT_BYTES", direct_bytes)
    x, y = _data()
    expected = _local_grads(_mlp(), x, y)
    model = _mlp()
    ddp = DistributedDataParallel(model, bucket_cap_mb=1)
    _ddp_step(ddp, x, y)
    for p, e in zip(model.parameters(), expected, strict=True):
        np.testing.assert_array_equal(nnx.to_numpy(p.grad), e)
    assert ddp.last_messages == len(twin_world) and ddp.last_bytes == 4 * sum(n for _, n in twin_world)
    in_place = backend.name == "numpy" and direct_bytes == 0   # only NumPy arrays are their own host view
    assert ddp.last_messages == (4 if in_place else 1)
    if in_place:   # the very gradient arrays were reduced, no bucket in between
        assert all(buf is p.grad for (buf, _), p in zip(twin_world, model.parameters(), strict=True))


def test_model_sees_grad_output_unchanged_and_dx_is_local(backend, twin_world):
    """The model's backward (its hooks, a custom backward) gets the loss gradient as in one process,
    and the returned input gradient is the local one (not averaged)."""
    x, y = _data()
    ref = _mlp()
    loss_fn = nnx.CrossEntropyLoss()
    loss_fn(ref(x), y)
    dy = loss_fn.backward()
    dy_host = nnx.to_numpy(dy).copy()
    dx_ref = nnx.to_numpy(ref.backward(dy))
    model = _mlp()
    ddp = DistributedDataParallel(model)
    seen = []
    backward = model.backward

    def spy(dy, *, input_grad=True):
        seen.append(nnx.to_numpy(dy).copy())
        return backward(dy, input_grad=input_grad)

    model.backward = spy
    dx = _ddp_step(ddp, x, y, input_grad=True)
    np.testing.assert_array_equal(seen[0], dy_host)
    np.testing.assert_array_equal(nnx.to_numpy(dx), dx_ref)


@pytest.mark.parametrize("direct_bytes", [0, 10**9], ids=["in-place", "packed"])
def test_no_sync_accumulation_then_sync_divides_the_sum(backend, twin_world, monkeypatch, direct_bytes):
    """Gradients accumulated under no_sync, or kept by zero_grad(set_to_none=False), are summed over
    ranks and divided once."""
    monkeypatch.setattr(parallel, "_DIRECT_BYTES", direct_bytes)
    x, y = _data()
    expected = _local_grads(_mlp(), x, y, passes=2)
    model = _mlp()
    ddp = DistributedDataParallel(model)
    with ddp.no_sync():
        _ddp_step(ddp, x, y)
    assert not twin_world, "no_sync sent a message"
    _ddp_step(ddp, x, y)
    for p, e in zip(model.parameters(), expected, strict=True):
        np.testing.assert_array_equal(nnx.to_numpy(p.grad), e)
    # zero_grad keeping zero arrays, then one step: the divide path again, same values as one local pass
    ddp.zero_grad(set_to_none=False)
    _ddp_step(ddp, x, y)
    for p, e in zip(model.parameters(), _local_grads(_mlp(), x, y), strict=True):
        np.testing.assert_array_equal(nnx.to_numpy(p.grad), e)


def test_a_gradient_referenced_elsewhere_is_not_reduced_in_place(backend, twin_world, monkeypatch):
    monkeypatch.setattr(parallel, "_DIRECT_BYTES", 0)
    x, y = _data()
    model = _mlp()
    ddp = DistributedDataParallel(model)
    loss_fn = nnx.CrossEntropyLoss()
    loss_fn(ddp(x), y)
    model.backward(loss_fn.backward(), input_grad=False)
    held = model[0].weight.grad                 # the user keeps the local gradient ...
    before = nnx.to_numpy(held).copy()
    view = model[2].weight.grad[:1, ...]         # ... and a view of another one
    ddp.sync_gradients()
    np.testing.assert_array_equal(nnx.to_numpy(held), before)   # untouched: it went through a bucket
    assert model[0].weight.grad is not held
    assert all(buf is not held for buf, _ in twin_world)
    assert view.shape[0] == 1
    # the two unreferenced biases went in place (NumPy only), the two referenced weights in one bucket
    assert ddp.last_messages == (3 if backend.name == "numpy" else 1)


def test_owned_host_grad_rules():
    p = nnx.Parameter(nnx.asarray(np.zeros((4, 4), dtype="float32")))
    assert parallel._owned_host_grad(p) is None                 # no gradient
    p.grad = nnx.asarray(np.ones((4, 4), dtype="float32"))
    if nnx.get_backend().name != "numpy":
        pytest.skip("the in-place path needs gradients that are NumPy arrays")
    assert parallel._owned_host_grad(p) is p.grad
    alias = p.grad
    assert parallel._owned_host_grad(p) is None                 # another reference
    del alias
    p.grad = np.ones((4, 8), dtype="float32")[:, ::2]
    assert parallel._owned_host_grad(p) is None                 # a non-contiguous view
