"""The CuPy adapter's Python side (``backends/cupy_fused.py``: argument order, column views of the
fused gates, output allocation, reductions) run on the CPU against the NumPy references.

A stand-in for the ``cupy`` module builds each ``ElementwiseKernel`` from the host-compiled kernel
bodies (``cuda_kernels.host_source``) and each row kernel of the ``RawModule`` from host wrappers
(as in ``test_cuda_host.py``); arrays are NumPy arrays. What a GPU adds (the CUDA compiler, the
launch itself) is covered by the NVRTC compile test and by ``-m cupy`` on a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import subprocess
import types

import numpy as np
import pytest
from cuda_host_helpers import ROW_HARNESS, ROW_WRAPPERS

from nnx_backends import cuda_kernels as K
from nnx_backends import fused as F
from nnx_backends import fused_train as T
from nnx_backends import norm as N
from nnx_backends import softmax as SM
from nnx_backends.base import erf_standard
from nnx_backends.cupy_fused import _EW, _MODULE, _RED, CupyFused

CT = {"float64": ctypes.c_double, "int32": ctypes.c_int, "int64": ctypes.c_longlong}


class _Elementwise:
    def __init__(self, libs, ins, outs, body, name, preamble=""):
        self.libs, self.name = libs, name
        self.params = [tuple(p.split()) for p in (ins + "," + outs).split(",")]
        self.n_in = len(ins.split(","))

    def __call__(self, *args):
        arrays = [a for (kind, _), a in zip(self.params, args) if kind == "T" and isinstance(a, np.ndarray)]
        dtype = arrays[0].dtype
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        lib = self.libs[dtype.name]
        outs_given = len(args) > self.n_in
        call, outs = [ctypes.c_longlong(int(np.prod(shape)))], []
        for k, (kind, _) in enumerate(self.params):
            if k < len(args):
                a = args[k]
            else:
                a = np.empty(shape, dtype)
            if kind == "T":
                buf = np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=dtype), shape)).copy()
                call.append(buf.ctypes.data_as(ctypes.c_void_p))
                if k >= self.n_in:
                    outs.append((a, buf))
            else:
                call.append(CT[kind](a))
        getattr(lib, self.name)(*call)
        for target, buf in outs:
            target[...] = buf
        result = [t for t, _ in outs]
        if outs_given:
            return result[0] if len(result) == 1 else tuple(result)
        return result[0] if len(result) == 1 else tuple(result)


class _Reduction:
    def __init__(self, ins, outs, mapx, red, post, ident, name, reduce_type=None):
        self.name = name

    def __call__(self, *args, axis=None):
        if self.name == "nnx_sqnorm":
            x = args[0]
            return np.asarray(np.sqrt(np.sum(x.astype(np.float64) ** 2)), dtype=x.dtype)
        if self.name == "nnx_vecdot":
            return np.sum(args[0] * args[1], axis=axis)
        x, lo, hi = args
        return np.asarray(np.any((x < lo) | (x >= hi)), dtype=np.int32)


ROW_ARGTYPES = {
    "nnx_ce_fwd": "ppp i q q q d ppp",
    "nnx_ce_bwd": "pppp i p q q q d p i p i p",
    "nnx_bn_reduce": "ppp q q q i pp",
    "nnx_ln_fwd": "ppp i i q d ppp",
    "nnx_ln_bwd": "pppp i q p",
    "nnx_softmax_cols_fwd": "p q q q pp",
    "nnx_softmax_cols_bwd": "pp q q q p",
}
_CODES = {"p": ctypes.c_void_p, "i": ctypes.c_int, "q": ctypes.c_longlong, "d": ctypes.c_double}


class _RawModule:
    def __init__(self, row_libs, **kw):
        self.row_libs = row_libs

    def get_function(self, expr):
        name, ctype = expr[:-1].split("<")
        lib = self.row_libs["float32" if ctype == "float" else "float64"]
        host = getattr(lib, {"nnx_ce_fwd": "host_ce_fwd", "nnx_ce_bwd": "host_ce_bwd",
                             "nnx_bn_reduce": "host_bn_reduce", "nnx_ln_fwd": "host_ln_fwd",
                             "nnx_ln_bwd": "host_ln_bwd", "nnx_softmax_cols_fwd": "host_softmax_cols_fwd",
                             "nnx_softmax_cols_bwd": "host_softmax_cols_bwd"}[name])
        codes = ROW_ARGTYPES[name].replace(" ", "")

        def launch(grid, block, args):
            call = []
            for code, a in zip(codes, args):
                if isinstance(a, np.generic):  # NumPy reductions give scalars where CuPy gives 0-d arrays
                    a = np.asarray(a)
                if code == "p":
                    assert isinstance(a, np.ndarray) and a.flags.c_contiguous, f"{name}: pointer arg not contiguous"
                    call.append(a.ctypes.data_as(ctypes.c_void_p))
                else:
                    call.append(_CODES[code](a))
            if name in ("nnx_ln_fwd", "nnx_ln_bwd"):  # block-per-row kernels: the host loop takes the grid's rows
                call.insert(5, ctypes.c_longlong(grid[0]))
            host(*call)

        return launch


def _compile(tmp, name, src):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the kernel bodies for the host")
    (tmp / f"{name}.cpp").write_text(src)
    subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(tmp / f"{name}.so"), str(tmp / f"{name}.cpp")],
                   check=True)
    return ctypes.CDLL(str(tmp / f"{name}.so"))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fakecupy")
    libs = {dt: _compile(tmp, dt, K.host_source(dt)) for dt in ("float32", "float64")}
    rows = {dt: _compile(tmp, "row" + dt, ROW_HARNESS + K.PREAMBLE + K.ROW_KERNELS + ROW_WRAPPERS.replace("TYPE", ct))
            for dt, ct in (("float32", "float"), ("float64", "double"))}
    cp = types.SimpleNamespace(
        ElementwiseKernel=lambda *a, **k: _Elementwise(libs, *a, **k), ReductionKernel=_Reduction,
        RawModule=lambda **k: _RawModule(rows, **k), empty=np.empty, empty_like=np.empty_like,
        ascontiguousarray=np.ascontiguousarray, asarray=np.asarray, int64=np.int64, maximum=np.maximum,
        dtype=np.dtype)
    adapter = CupyFused()
    adapter._cp = cp
    adapter.device = contextlib.nullcontext()
    saved = (dict(_EW), dict(_RED), list(_MODULE))
    _EW.clear(), _RED.clear(), _MODULE.clear()
    yield adapter
    _EW.clear(), _RED.clear(), _MODULE.clear()
    _EW.update(saved[0]), _RED.update(saved[1]), _MODULE.extend(saved[2])


DT = [np.float32, np.float64]


def tol(dt):
    return {"rtol": 3e-5, "atol": 3e-6} if dt == np.float32 else {"rtol": 1e-11, "atol": 1e-12}


def erf(x):
    return erf_standard(np, x)


@pytest.mark.parametrize("dt", DT)
@pytest.mark.parametrize("act", sorted(K.ACT_FWD))
def test_bias_act(fake, act, dt):
    r = np.random.default_rng(0)
    x, dy = r.standard_normal((4, 6)).astype(dt), r.standard_normal((4, 6)).astype(dt)
    b = r.standard_normal(6).astype(dt)
    y, saved = fake.bias_act_forward(x, b, act)
    ry, rsaved = F.bias_act_forward(np, x, b, act, erf)
    np.testing.assert_allclose(y, ry, **tol(dt))
    dx, db = fake.bias_act_backward(dy, saved, act)
    rdx, rdb = F.bias_act_backward(np, dy, rsaved, act, True, erf)
    np.testing.assert_allclose(dx, rdx, **tol(dt))
    np.testing.assert_allclose(db, rdb, **tol(dt))


@pytest.mark.parametrize("dt", DT)
def test_lstm_and_gru(fake, dt):
    r = np.random.default_rng(1)
    gates, c0, dh, dc = (r.standard_normal(s).astype(dt) for s in ((3, 20), (3, 5), (3, 5), (3, 5)))
    h, c, act = fake.lstm_cell_forward(gates, c0)
    rh, rc, ract = F.lstm_cell_forward(np, gates, c0)
    for a, b in ((h, rh), (c, rc), (act, ract)):
        np.testing.assert_allclose(a, b, **tol(dt))
    for dcn in (dc, None):
        d, dcp = fake.lstm_cell_backward(act, c0, dh, dcn)
        rd, rdcp = F.lstm_cell_backward(np, ract, c0, dh, dcn)
        np.testing.assert_allclose(d, rd, **tol(dt))
        np.testing.assert_allclose(dcp, rdcp, **tol(dt))
    gx, gh = r.standard_normal((3, 15)).astype(dt), r.standard_normal((3, 15)).astype(dt)
    for b_hn in (None, r.standard_normal(5).astype(dt)):
        h, act = fake.gru_cell_forward(gx, gh, c0, b_hn)
        rh, ract = F.gru_cell_forward(np, gx, gh, c0, b_hn)
        np.testing.assert_allclose(h, rh, **tol(dt))
        np.testing.assert_allclose(act, ract, **tol(dt))
    for a, b in zip(fake.gru_cell_backward(act, c0, dh), F.gru_cell_backward(np, ract, c0, dh)):
        np.testing.assert_allclose(a, b, **tol(dt))


@pytest.mark.parametrize("dt", DT)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy(fake, dt, reduction, weighted):
    r = np.random.default_rng(2)
    logits, target = (r.standard_normal((6, 4)) * 2).astype(dt), r.integers(0, 4, 6)
    target[2] = -100
    w = r.uniform(0.5, 2, 4).astype(dt) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=0.1)
    loss, saved = fake.cross_entropy_forward(logits, target, w, **kw)
    rloss, rsaved = T.cross_entropy_forward(np, logits, target, w, **kw)
    np.testing.assert_allclose(loss, rloss, **tol(dt))
    g = r.standard_normal(6).astype(dt) if reduction == "none" else np.asarray(0.7, dt)
    np.testing.assert_allclose(fake.cross_entropy_backward(g, saved, target, w, **kw),
                               T.cross_entropy_backward(np, g, rsaved, target, w, **kw), **tol(dt))


@pytest.mark.parametrize("dt", DT)
def test_batch_norm(fake, dt):
    r = np.random.default_rng(3)
    x, dy = (r.standard_normal((4, 3, 5)) + 1).astype(dt), r.standard_normal((4, 3, 5)).astype(dt)
    w, b = r.uniform(0.5, 1.5, 3).astype(dt), r.standard_normal(3).astype(dt)
    mean, var = fake.batch_norm_stats(x)
    rmean, rvar = T.batch_norm_stats(np, x)
    np.testing.assert_allclose(mean, rmean, **tol(dt))
    np.testing.assert_allclose(var, rvar, rtol=1e-4 if dt == np.float32 else 1e-10, atol=1e-6)
    y, invstd = fake.batch_norm_forward(x, mean, var, w, b, 1e-5)
    ry, rinv = T.batch_norm_forward(np, x, mean, var, w, b, 1e-5)
    np.testing.assert_allclose(y, ry, **tol(dt))
    for a, c in zip(fake.batch_norm_backward(dy, x, mean, invstd, w), T.batch_norm_backward(np, dy, x, mean, rinv, w)):
        np.testing.assert_allclose(a, c, rtol=1e-4 if dt == np.float32 else 1e-10, atol=1e-5)


@pytest.mark.parametrize("dt", DT)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(fake, dt, affine):
    r = np.random.default_rng(5)
    x, dy = (r.standard_normal((6, 9)) * 2 + 1).astype(dt), r.standard_normal((6, 9)).astype(dt)
    w = r.uniform(0.5, 1.5, 9).astype(dt) if affine else None
    b = r.standard_normal(9).astype(dt) if affine else None
    vecdot = lambda a, c, axis=-1: np.sum(a * c, axis=axis)  # noqa: E731
    got = fake.layer_norm_rows_forward(x[:, ::1], w, b, 1e-5)
    ref = N.layer_norm_rows_forward(np, x, w, b, 1e-5, vecdot)
    for a, c in zip(got, ref, strict=True):
        assert a.shape == c.shape
        np.testing.assert_allclose(a, c, **tol(dt))
    for input_grad in (True, False):
        grads = fake.layer_norm_rows_backward(np.asfortranarray(dy), got[1], got[2], w, affine, input_grad)
        rgrads = N.layer_norm_rows_backward(np, dy, ref[1], ref[2], w, affine, input_grad, vecdot)
        for a, c in zip(grads, rgrads, strict=True):
            assert (a is None) == (c is None)
            if a is not None:
                np.testing.assert_allclose(a, c, **tol(dt))


@pytest.mark.parametrize("dt", DT)
def test_softmax_columns(fake, dt):
    r = np.random.default_rng(6)
    s = (r.standard_normal((2, 3, 5, 4)) * 2).astype(dt)
    s[0, 1, :, 3] = -np.inf
    dp = r.standard_normal((2, 3, 5, 4)).astype(dt)
    p, lse = fake.softmax_cols_forward(np.swapaxes(np.swapaxes(s, -1, -2).copy(), -1, -2))  # a strided input
    rp, rlse = SM.softmax_cols_forward(np, s.copy())
    assert p.shape == s.shape and lse.shape == (2, 3, 1, 4)
    np.testing.assert_allclose(p, rp, **tol(dt))
    np.testing.assert_allclose(lse, rlse, **tol(dt))
    rds = SM.softmax_cols_backward(np, dp.copy(), rp, lambda a, c, axis=-1: np.sum(a * c, axis=axis))
    np.testing.assert_allclose(fake.softmax_cols_backward(dp, p), rds, **tol(dt))


@pytest.mark.parametrize("dt", DT)
def test_optimizers_and_reductions(fake, dt):
    r = np.random.default_rng(4)
    cases = [
        ("sgd_step_", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=True, first=False), 1),
        ("sgd_step_", dict(lr=0.1), 1),
        ("adam_step_", dict(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, step=4, weight_decay=0.1, decoupled=True), 2),
        ("adam_step_", dict(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, step=4), 3),
        ("rmsprop_step_", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01, momentum=0.5), 2),
        ("rmsprop_step_", dict(lr=0.01, alpha=0.9), 1),
        ("adagrad_step_", dict(lr=0.1, step=3, lr_decay=0.01, weight_decay=0.01), 1),
    ]
    for name, kw, nstate in cases:
        p, g = r.standard_normal(9).astype(dt), r.standard_normal(9).astype(dt)
        states = [r.uniform(0, 1, 9).astype(dt) for _ in range(nstate)]
        if name == "sgd_step_" and not kw.get("momentum"):
            states = [None]
        p2, s2 = p.copy(), [None if s is None else s.copy() for s in states]
        getattr(fake, name)(p, g, *states, **kw)
        getattr(T, name)(np, p2, g, *s2, **kw)
        np.testing.assert_allclose(p, p2, **tol(dt), err_msg=f"{name} {kw}")
        for a, b in zip(states, s2):
            if a is not None:
                np.testing.assert_allclose(a, b, **tol(dt), err_msg=f"{name} {kw}")
    a = r.standard_normal((3, 7)).astype(dt)
    np.testing.assert_allclose(fake.grad_norm(a), np.linalg.norm(a), **tol(dt))
    assert int(fake.index_in_range(np.array([0, 4]), 0, 5)) == 0
    assert int(fake.index_in_range(np.array([0, 5]), 0, 5)) == 1


@pytest.mark.parametrize("dt", DT)
def test_cell_kernels_write_into_out(fake, dt):
    """``out=`` (a strided column view of a wider buffer) receives the result, which is returned."""
    r = np.random.default_rng(5)
    gates, c0, dh, dc = (r.standard_normal(s).astype(dt) for s in ((3, 20), (3, 5), (3, 5), (3, 5)))
    buf = np.zeros((3, 27), dt)
    _, _, act = fake.lstm_cell_forward(gates, c0, out=buf[:, :25])
    assert act.base is buf or act is buf
    np.testing.assert_allclose(buf[:, :25], F.lstm_cell_forward(np, gates, c0)[2], **tol(dt))
    saved = buf[:, :25].copy()
    fake.lstm_cell_backward(saved, c0, dh, dc, out=buf[:, 2:22])
    np.testing.assert_allclose(buf[:, 2:22], F.lstm_cell_backward(np, saved, c0, dh, dc)[0], **tol(dt))
    gx, gh = r.standard_normal((3, 15)).astype(dt), r.standard_normal((3, 15)).astype(dt)
    _, act = fake.gru_cell_forward(gx, gh, c0, out=buf[:, 1:21])
    np.testing.assert_allclose(buf[:, 1:21], F.gru_cell_forward(np, gx, gh, c0)[1], **tol(dt))
    ref = F.gru_cell_backward(np, act.copy(), c0, dh)
    other = np.zeros((3, 16), dt)
    fake.gru_cell_backward(act.copy(), c0, dh, out=buf[:, :15], out_gh=other[:, 1:])
    np.testing.assert_allclose(buf[:, :15], ref[0], **tol(dt))
    np.testing.assert_allclose(other[:, 1:], ref[1], **tol(dt))
    y = np.zeros((3, 7), dt)
    fake.bias_act_forward(gates[:, :5], c0, "tanh", out=y[:, 1:6])
    np.testing.assert_allclose(y[:, 1:6], np.tanh(gates[:, :5] + c0), **tol(dt))
    fake.bias_act_backward(dh, y[:, 1:6].copy(), "tanh", has_bias=False, out=y[:, :5])
    np.testing.assert_allclose(y[:, :5], dh * (1 - np.tanh(gates[:, :5] + c0) ** 2), **tol(dt))
