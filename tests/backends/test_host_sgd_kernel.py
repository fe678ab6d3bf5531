"""SGD over a parameter group as one host-kernel run (``nnx_sgd`` / the ``sgd_multi`` task of
``backends/host_kernels.c``) against the standard step per tensor (``fused_train.sgd_step_``, the
arithmetic of ``torch.optim.SGD``): momentum, dampening, Nesterov, weight decay, the first step
that sets the buffer; bit-identical at every thread count; the cases it leaves to the per-tensor
path; and ``nnx.optim.SGD`` on NumPy taking it with the per-parameter path's numbers.

The optimizer tests (``tests/optim``) hold ``nnx.optim.SGD`` to ``torch.optim.SGD`` step by step."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.numpy_fused as NF
from nnx_backends.fused_api import FusedOps

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=2e-6, atol=1e-7), "float64": dict(rtol=1e-14, atol=1e-16)}
OPTIONS = {
    "plain": dict(momentum=0.0),
    "momentum": dict(momentum=0.9),
    "dampening-wd": dict(momentum=0.8, dampening=0.3, weight_decay=0.01),
    "nesterov-wd": dict(momentum=0.9, nesterov=True, weight_decay=0.05),
}


@pytest.fixture
def adapter(lib):
    with nnx.use_backend("numpy") as b:
        yield b


def _group(rng, sizes, dtype, momentum):
    params = [rng.standard_normal(s).astype(dtype) for s in sizes]
    grads = [(rng.standard_normal(s) * 0.3).astype(dtype) for s in sizes]
    bufs = [(rng.standard_normal(s) * 0.1).astype(dtype) for s in sizes] if momentum else None
    return params, grads, bufs


def _copy(group):
    params, grads, bufs = group
    return [a.copy() for a in params], [a.copy() for a in grads], None if bufs is None else [a.copy() for a in bufs]


def _spy(monkeypatch):
    ran = []
    real = HK.HostKernels.run
    monkeypatch.setattr(HK.HostKernels, "run",
                        lambda self, name, *a, **k: ran.append(name) or real(self, name, *a, **k))
    return ran


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("first", [False, True], ids=["later-step", "first-step"])
def test_sgd_multi_matches_per_tensor_steps_at_every_thread_count(adapter, threads, monkeypatch, dtype, opts,
                                                                 first):
    kw = dict(lr=0.05, first=first, **OPTIONS[opts])
    if first and not kw["momentum"]:
        pytest.skip("the first step only differs with a momentum buffer")
    ran = _spy(monkeypatch)
    group = _group(np.random.default_rng(1), (1037, 1, 0, 3, 64 * 33), dtype, kw["momentum"])
    ref = _copy(group)
    FusedOps.sgd_multi_step_(adapter, *ref, **kw)  # the standard step, tensor by tensor
    outs = []
    for n in (1, 2, 3):
        threads(n)
        got = _copy(group)
        ran.clear()
        adapter.sgd_multi_step_(*got, **kw)
        assert ran == ["sgd_multi"], ran
        outs.append(got)
        for which in (0, 2):  # params, momentum buffers
            for a, r in zip(got[which] or [], ref[which] or [], strict=True):
                np.testing.assert_allclose(a, r, **TOL[dtype])
        assert all(np.array_equal(a, b) for a, b in zip(got[1], group[1], strict=True)), "a gradient was written"
    for other in outs[1:]:
        for arrays, first_run in zip(other, outs[0], strict=True):
            for a, b in zip(arrays or [], first_run or [], strict=True):
                np.testing.assert_array_equal(a, b)


def test_sgd_multi_refuses_what_one_pass_cannot_do(adapter, monkeypatch):
    """A buffer shared with another tensor's parameter, mixed dtypes, a strided gradient: the group
    goes tensor by tensor (the group kernel never runs), with that path's numbers."""
    real = HK.HostKernels.run
    monkeypatch.setattr(HK.HostKernels, "run", lambda self, name, *a, **k: (
        pytest.fail("sgd_multi ran") if name == "sgd_multi" else real(self, name, *a, **k)))
    kw = dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, first=False)

    def shared(g):  # the second tensor's momentum buffer is the first one's parameter
        g[2][1] = g[0][0][:30]

    def mixed(g):
        g[1][1] = g[1][1].astype(np.float64)

    def strided(g):
        g[1][0] = np.repeat(g[1][0], 2)[::2]

    for mutate in (shared, mixed, strided):
        got, ref = (list(_group(np.random.default_rng(2), (50, 30), "float32", 0.9)) for _ in range(2))
        mutate(got)
        mutate(ref)
        adapter.sgd_multi_step_(*got, **kw)
        FusedOps.sgd_multi_step_(adapter, *ref, **kw)
        for arrays, r in zip(got, ref, strict=True):
            for a, b in zip(arrays, r, strict=True):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("opts", ["momentum", "nesterov-wd"])
def test_sgd_takes_the_group_kernel_on_numpy(adapter, monkeypatch, opts):
    """``nnx.optim.SGD`` on NumPy updates a group in one run (the first step's buffers included),
    with the numbers of its per-parameter path."""
    import nnx.functional._device as device

    monkeypatch.setattr(device, "DEVICE_PATHS", "never")  # the CPU-shaped formulation (CI also runs "always")
    ran = _spy(monkeypatch)
    results = []
    for kinds in (("adam", "sgd"), ()):
        monkeypatch.setattr(NF.NumpyFused, "multi_tensor_kinds", lambda self, k=kinds: k)
        nnx.manual_seed(0)
        model = nnx.Sequential(nnx.Linear(6, 5), nnx.Tanh(), nnx.Linear(5, 2))
        opt = nnx.optim.SGD(model.parameters(), lr=0.1, **OPTIONS[opts])
        rng = np.random.default_rng(3)
        for _ in range(3):
            for p in model.parameters():
                p.grad = rng.standard_normal(p.data.shape).astype(np.float32)
            ran.clear()
            opt.step()
            assert ran == (["sgd_multi"] if kinds else []), ran
        results.append([np.array(p.data) for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, **TOL["float32"])
