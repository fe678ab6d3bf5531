"""The arithmetic of every CUDA elementwise kernel, checked on the CPU.

Each kernel body is compiled as host C++ inside a loop over the elements (``cuda_kernels.host_source``;
one shared library per dtype, built with g++ through ctypes) and compared with the NumPy references
of ``backends/fused.py`` and ``fused_train.py`` in float32 and float64. Skips when no C++ compiler
is installed.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest
from cuda_host_helpers import ROW_HARNESS, ROW_WRAPPERS

from nnx_backends import cuda_kernels as K
from nnx_backends import fused as F
from nnx_backends import fused_train as T
from nnx_backends import norm as NR
from nnx_backends import softmax as SM

N = 64
CTYPES = {"float64": ctypes.c_double, "int32": ctypes.c_int}


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++/clang++) to build the kernel bodies for the host")
    out = {}
    for dt in ("float32", "float64"):
        d = tmp_path_factory.mktemp(dt)
        (d / "k.cpp").write_text(K.host_source(dt))
        subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(d / "k.so"), str(d / "k.cpp")], check=True)
        out[dt] = ctypes.CDLL(str(d / "k.so"))
    return out


def run(lib, name: str, dtype, **values):
    """Call host kernel ``name``: arrays are copied (outputs updated in place and returned)."""
    ins, outs, _ = K.ELEMENTWISE[name]
    args: list = [ctypes.c_longlong(N)]
    arrays = {}
    for kind, pname in [tuple(p.split()) for p in (ins + "," + outs).split(",")]:
        if kind == "T":
            a = np.ascontiguousarray(np.broadcast_to(values.get(pname, 0.0), (N,)), dtype=dtype).copy()
            arrays[pname] = a
            args.append(a.ctypes.data_as(ctypes.c_void_p))
        else:
            args.append(CTYPES[kind](values[pname]))
    getattr(lib, f"nnx_{name}")(*args)
    return arrays


def rng_arrays(k, dtype, low=-3.0, high=3.0, seed=0):
    r = np.random.default_rng(seed)
    return [r.uniform(low, high, N).astype(dtype) for _ in range(k)]


def tol(dtype):
    return {"rtol": 2e-5, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


def erf(x):
    from nnx_backends.base import erf_standard

    return erf_standard(np, x)


DT = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("act", sorted(K.ACT_FWD))
def test_bias_act(libs, act, dtype):
    lib = libs[np.dtype(dtype).name]
    x, b, dy = rng_arrays(3, dtype)
    got = run(lib, f"bias_{act}_fwd", dtype, x=x, b=b)
    y, saved = F.bias_act_forward(np, x, b, act, erf)
    np.testing.assert_allclose(got["y"], y, **tol(dtype))
    if act in K.NEEDS_INPUT:
        np.testing.assert_allclose(got["z"], saved, **tol(dtype))
    dx = run(lib, f"act_{act}_bwd", dtype, dy=dy, saved=saved)["dx"]
    np.testing.assert_allclose(dx, F.act_backward(np, dy, saved, act, erf), **tol(dtype))


@pytest.mark.parametrize("dtype", DT)
def test_lstm(libs, dtype):
    lib = libs[np.dtype(dtype).name]
    gi, gf, gg, go, cp, dh, dc = rng_arrays(7, dtype)
    got = run(lib, "lstm_fwd", dtype, gi=gi, gf=gf, gg=gg, go=go, cp=cp)
    h, c, act = F.lstm_cell_forward(np, np.stack([gi, gf, gg, go], 1), cp.reshape(N, 1))
    for k, name in enumerate(("si", "sf", "sg", "so", "tc")):
        np.testing.assert_allclose(got[name], act[:, k], **tol(dtype))
    np.testing.assert_allclose(got["c"], c[:, 0], **tol(dtype))
    np.testing.assert_allclose(got["h"], h[:, 0], **tol(dtype))
    back = run(lib, "lstm_bwd", dtype, si=act[:, 0], sf=act[:, 1], sg=act[:, 2], so=act[:, 3], tc=act[:, 4], cp=cp,
               dh=dh, dc=dc)
    dg, dcp = F.lstm_cell_backward(np, act, cp.reshape(N, 1), dh.reshape(N, 1), dc.reshape(N, 1))
    for k, name in enumerate(("di", "df", "dg", "do_")):
        np.testing.assert_allclose(back[name], dg[:, k], **tol(dtype))
    np.testing.assert_allclose(back["dcp"], dcp[:, 0], **tol(dtype))


@pytest.mark.parametrize("dtype", DT)
def test_gru(libs, dtype):
    lib = libs[np.dtype(dtype).name]
    xr, xz, xn, hr, hz, hn, bn, hp, dh = rng_arrays(9, dtype)
    got = run(lib, "gru_fwd", dtype, xr=xr, xz=xz, xn=xn, hr=hr, hz=hz, hn=hn, bn=bn, hp=hp)
    h, act = F.gru_cell_forward(np, np.stack([xr, xz, xn], 1), np.stack([hr, hz, hn], 1), hp[:, None], bn[:, None])
    for k, name in enumerate(("r", "z", "n", "hs")):
        np.testing.assert_allclose(got[name], act[:, k], **tol(dtype))
    np.testing.assert_allclose(got["h"], h[:, 0], **tol(dtype))
    back = run(lib, "gru_bwd", dtype, r=act[:, 0], z=act[:, 1], n=act[:, 2], hn=act[:, 3], hp=hp, dh=dh)
    dgx, dgh, dhp = F.gru_cell_backward(np, act, hp[:, None], dh[:, None])
    for k, name in enumerate(("dxr", "dxz", "dxn")):
        np.testing.assert_allclose(back[name], dgx[:, k], **tol(dtype))
    for k, name in enumerate(("dhr", "dhz", "dhn")):
        np.testing.assert_allclose(back[name], dgh[:, k], **tol(dtype))
    np.testing.assert_allclose(back["dhp"], dhp[:, 0], **tol(dtype))


OPT_CASES = [
    ("adam", dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, step=3, weight_decay=0.1, decoupled=False)),
    ("adam", dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, step=3, weight_decay=0.1, decoupled=True)),
    ("adam_amsgrad", dict(lr=1e-2, beta1=0.8, beta2=0.9, eps=1e-8, step=2, weight_decay=0.0, decoupled=False)),
    ("sgd", dict(lr=0.1, weight_decay=0.01)),
    ("sgd_momentum", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=True, first=False)),
    ("sgd_momentum", dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, first=True)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01)),
    ("rmsprop_momentum", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.5)),
    ("adagrad", dict(lr=0.1, step=3, lr_decay=0.01, weight_decay=0.01, eps=1e-10)),
]


def _opt_reference(name, kw, p, g, s1, s2, s3):
    if name.startswith("adam"):
        T.adam_step_(np, p, g, s1, s2, s3 if name == "adam_amsgrad" else None, **kw)
        return {"p": p, "m": s1, "v": s2, **({"vmax": s3} if name == "adam_amsgrad" else {})}
    if name.startswith("sgd"):
        T.sgd_step_(np, p, g, s1, **({"momentum": 0.0} | kw))
        return {"p": p, **({"buf": s1} if name == "sgd_momentum" else {})}
    if name.startswith("rmsprop"):
        T.rmsprop_step_(np, p, g, s1, s2, **kw)
        return {"p": p, "sq": s1, **({"buf": s2} if name == "rmsprop_momentum" else {})}
    T.adagrad_step_(np, p, g, s1, **kw)
    return {"p": p, "s": s1}


def _opt_kernel_args(name, kw, p, g, s1, s2, s3):
    if name.startswith("adam"):
        bc1, bc2 = 1 - kw["beta1"] ** kw["step"], 1 - kw["beta2"] ** kw["step"]
        return dict(g=g, lr=kw["lr"], b1=kw["beta1"], b2=kw["beta2"], eps=kw["eps"], bc1=bc1,
                    inv_sqrt_bc2=1 / bc2 ** 0.5, wd=kw["weight_decay"], decoupled=int(kw["decoupled"]),
                    p=p, m=s1, v=s2, vmax=s3)
    if name == "sgd":
        return dict(g=g, lr=kw["lr"], wd=kw["weight_decay"], p=p)
    if name == "sgd_momentum":
        return dict(g=g, lr=kw["lr"], mom=kw["momentum"], damp=kw["dampening"], wd=kw["weight_decay"],
                    nesterov=int(kw["nesterov"]), first=int(kw["first"]), p=p, buf=s1)
    if name.startswith("rmsprop"):
        return dict(g=g, lr=kw["lr"], alpha=kw["alpha"], eps=kw["eps"], wd=kw["weight_decay"],
                    mom=kw.get("momentum", 0.0), p=p, sq=s1, buf=s2)
    return dict(g=g, clr=kw["lr"] / (1 + (kw["step"] - 1) * kw["lr_decay"]), wd=kw["weight_decay"], eps=kw["eps"],
                p=p, s=s1)


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("case", range(len(OPT_CASES)))
def test_optimizer_kernels(libs, case, dtype):
    name, kw = OPT_CASES[case]
    p, g = rng_arrays(2, dtype)
    s1, s2, s3 = rng_arrays(3, dtype, 0.0, 1.0, seed=1)
    got = run(libs[np.dtype(dtype).name], name, dtype, **_opt_kernel_args(name, kw, p, g, s1, s2, s3))
    ref = _opt_reference(name, kw, p.copy(), g, s1.copy(), s2.copy(), s3.copy())
    for key, val in ref.items():
        np.testing.assert_allclose(got[key], val, **tol(dtype), err_msg=f"{name}: {key}")


@pytest.mark.parametrize("dtype", DT)
def test_batch_norm_kernels(libs, dtype):
    lib = libs[np.dtype(dtype).name]
    x, mean, w, b, dy, sdy, sdxm = rng_arrays(7, dtype)
    (var,) = rng_arrays(1, dtype, 0.1, 2.0)
    invstd = run(lib, "bn_invstd", dtype, var=var, eps=1e-5)["invstd"]
    np.testing.assert_allclose(invstd, 1 / np.sqrt(var + 1e-5), **tol(dtype))
    y = run(lib, "bn_norm", dtype, x=x, mean=mean, invstd=invstd, w=w, b=b)["y"]
    np.testing.assert_allclose(y, (x - mean) * invstd * w + b, **tol(dtype))
    m = 7.0
    dx = run(lib, "bn_bwd_dx", dtype, dy=dy, x=x, mean=mean, invstd=invstd, w=w, sdy=sdy, sdxm=sdxm, m=m)["dx"]
    xh = (x - mean) * invstd
    np.testing.assert_allclose(dx, w * invstd / m * (m * dy - sdy - xh * sdxm * invstd), **tol(dtype))


@pytest.fixture(scope="module")
def row_libs(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++/clang++) to build the row kernels for the host")
    out = {}
    for dt, ct in (("float32", "float"), ("float64", "double")):
        d = tmp_path_factory.mktemp("row" + dt)
        src = ROW_HARNESS + K.PREAMBLE + K.ROW_KERNELS + ROW_WRAPPERS.replace("TYPE", ct)
        (d / "k.cpp").write_text(src)
        subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(d / "k.so"), str(d / "k.cpp")], check=True)
        out[dt] = ctypes.CDLL(str(d / "k.so"))
    return out


def _p(a):
    return a.ctypes.data_as(ctypes.c_void_p)


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("opts", [dict(smoothing=0.0, weighted=False), dict(smoothing=0.1, weighted=True)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_row_kernels(row_libs, dtype, opts, reduction):
    lib = row_libs[np.dtype(dtype).name]
    r = np.random.default_rng(7)
    rows, cols, ignore = 6, 5, 2
    logits = (r.standard_normal((rows, cols)) * 3).astype(dtype)
    target = r.integers(0, cols, rows).astype(np.int64)
    target[1] = ignore
    weight = r.uniform(0.5, 2.0, cols).astype(dtype) if opts["weighted"] else None
    kw = dict(ignore_index=ignore, label_smoothing=opts["smoothing"], reduction=reduction)
    ref_loss, saved = T.cross_entropy_forward(np, logits, target, weight, **kw)
    loss, wy, lse = (np.zeros(rows, dtype) for _ in range(3))
    wbuf = weight if weight is not None else logits
    lib.host_ce_fwd(_p(logits), _p(target), _p(wbuf), ctypes.c_int(weight is not None), ctypes.c_longlong(rows),
                    ctypes.c_longlong(cols), ctypes.c_longlong(ignore), ctypes.c_double(opts["smoothing"]),
                    _p(loss), _p(wy), _p(lse))
    total = loss if reduction == "none" else loss.sum() / wy.sum()
    np.testing.assert_allclose(total, ref_loss, **tol(dtype))
    grad = r.standard_normal(rows).astype(dtype) if reduction == "none" else np.array([1.5], dtype)
    ref_d = T.cross_entropy_backward(np, grad if reduction == "none" else grad[0], saved, target, weight, **kw)
    d = np.zeros_like(logits)
    wsum = np.array([weight.sum() if weight is not None else 0.0], dtype)
    denom = np.array([wy.sum()], dtype)
    lib.host_ce_bwd(_p(logits), _p(lse), _p(target), _p(wbuf), ctypes.c_int(weight is not None), _p(wsum),
                    ctypes.c_longlong(rows), ctypes.c_longlong(cols), ctypes.c_longlong(ignore),
                    ctypes.c_double(opts["smoothing"]), _p(grad), ctypes.c_int(reduction == "none"), _p(denom),
                    ctypes.c_int(reduction == "mean"), _p(d))
    np.testing.assert_allclose(d, ref_d, **tol(dtype))


@pytest.mark.parametrize("dtype", DT)
def test_cross_entropy_row_kernels_never_read_out_of_range(row_libs, dtype):
    """A class index outside [0, C) (unchecked on a GPU) gives a NaN loss and NaN gradients for its row,
    never a read out of bounds; the other rows are unaffected."""
    lib = row_libs[np.dtype(dtype).name]
    rows, cols = 3, 4
    logits = np.random.default_rng(0).standard_normal((rows, cols)).astype(dtype)
    target = np.array([1, 7, -3], dtype=np.int64)
    loss, wy, lse = (np.zeros(rows, dtype) for _ in range(3))
    lib.host_ce_fwd(_p(logits), _p(target), _p(logits), ctypes.c_int(0), ctypes.c_longlong(rows),
                    ctypes.c_longlong(cols), ctypes.c_longlong(-100), ctypes.c_double(0.0), _p(loss), _p(wy), _p(lse))
    assert np.isfinite(loss[0]) and np.isnan(loss[1:]).all()
    d = np.zeros_like(logits)
    lib.host_ce_bwd(_p(logits), _p(lse), _p(target), _p(logits), ctypes.c_int(0), _p(np.zeros(1, dtype)),
                    ctypes.c_longlong(rows), ctypes.c_longlong(cols), ctypes.c_longlong(-100), ctypes.c_double(0.0),
                    _p(np.ones(1, dtype)), ctypes.c_int(0), _p(np.ones(1, dtype)), ctypes.c_int(0), _p(d))
    assert np.isfinite(d[0]).all() and np.isnan(d[1:]).all()


@pytest.mark.parametrize("dtype", DT)
def test_batch_norm_reduce_row_kernel(row_libs, dtype):
    lib = row_libs[np.dtype(dtype).name]
    r = np.random.default_rng(8)
    n, c, length = 3, 4, 5
    x = (r.standard_normal((n, c, length)) + 1.5).astype(dtype)
    dy = r.standard_normal((n, c, length)).astype(dtype)
    mean, var = np.zeros(c, dtype), np.zeros(c, dtype)
    args = (ctypes.c_longlong(n), ctypes.c_longlong(c), ctypes.c_longlong(length))
    lib.host_bn_reduce(_p(x), _p(x), _p(x), *args, ctypes.c_int(0), _p(mean), _p(var))
    ref_mean, ref_var = T.batch_norm_stats(np, x)
    np.testing.assert_allclose(mean, ref_mean, **tol(dtype))
    np.testing.assert_allclose(var, ref_var, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)
    sdy, sdxm = np.zeros(c, dtype), np.zeros(c, dtype)
    lib.host_bn_reduce(_p(x), _p(dy), _p(mean), *args, ctypes.c_int(1), _p(sdy), _p(sdxm))
    invstd = 1.0 / np.sqrt(var + 1e-5)
    _, dw, db = T.batch_norm_backward(np, dy, x, mean, invstd, None)
    np.testing.assert_allclose(sdy, db, **tol(dtype))
    np.testing.assert_allclose(sdxm * invstd, dw, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_row_kernels(row_libs, dtype, affine):
    lib = row_libs[np.dtype(dtype).name]
    r = np.random.default_rng(9)
    rows, n = 5, 7
    x = (r.standard_normal((rows, n)) * 2 + 1).astype(dtype)
    dy = r.standard_normal((rows, n)).astype(dtype)
    w = r.uniform(0.5, 1.5, n).astype(dtype) if affine else x
    b = r.standard_normal(n).astype(dtype) if affine else x
    y, xhat, invstd = (np.zeros((rows, n), dtype), np.zeros((rows, n), dtype), np.zeros((rows, 1), dtype))
    dims = (ctypes.c_longlong(rows), ctypes.c_longlong(n))
    lib.host_ln_fwd(_p(x), _p(w), _p(b), ctypes.c_int(affine), ctypes.c_int(affine), *dims, ctypes.c_double(1e-5),
                    _p(y), _p(xhat), _p(invstd))
    vecdot = lambda a, c, axis=-1: np.sum(a * c, axis=axis)  # noqa: E731
    ref = NR.layer_norm_rows_forward(np, x, w if affine else None, b if affine else None, 1e-5, vecdot)
    for got, want in zip((y, xhat, invstd), ref, strict=True):
        np.testing.assert_allclose(got, want, **tol(dtype))
    dx = np.zeros((rows, n), dtype)
    lib.host_ln_bwd(_p(dy), _p(xhat), _p(invstd), _p(w), ctypes.c_int(affine), *dims, _p(dx))
    rdx, _, _ = NR.layer_norm_rows_backward(np, dy, ref[1], ref[2], w if affine else None, affine, True, vecdot)
    np.testing.assert_allclose(dx, rdx, **tol(dtype))


@pytest.mark.parametrize("dtype", DT)
def test_softmax_column_kernels(row_libs, dtype):
    """Columns of (batches, S, L) scores, one fully masked (-inf) column: p 0 and lse +inf there; a
    NaN score makes its column NaN, as the reference."""
    lib = row_libs[np.dtype(dtype).name]
    r = np.random.default_rng(10)
    batches, rows, cols = 3, 5, 4
    s = (r.standard_normal((batches, rows, cols)) * 3).astype(dtype)
    s[1, :, 2] = -np.inf
    s[2, 1:, 0] = -np.inf  # one key left in this column
    s[0, 3, 1] = np.nan
    dp = r.standard_normal((batches, rows, cols)).astype(dtype)
    p, lse = np.zeros_like(s), np.zeros((batches, 1, cols), dtype)
    dims = (ctypes.c_longlong(batches), ctypes.c_longlong(rows), ctypes.c_longlong(cols))
    lib.host_softmax_cols_fwd(_p(s), *dims, _p(p), _p(lse))
    rp, rlse = SM.softmax_cols_forward(np, s.copy())
    np.testing.assert_allclose(p, rp, **tol(dtype))
    np.testing.assert_allclose(lse, rlse, **tol(dtype))
    assert np.all(p[1, :, 2] == 0) and np.isposinf(lse[1, 0, 2])
    assert np.isnan(p[0, :, 1]).all() and np.isnan(lse[0, 0, 1]) and not np.isnan(np.delete(p, 1, axis=-1)).any()
    ds = np.zeros_like(s)
    lib.host_softmax_cols_bwd(_p(dp), _p(p), *dims, _p(ds))
    rds = SM.softmax_cols_backward(np, dp.copy(), rp, lambda a, c, axis=-1: np.sum(a * c, axis=axis))
    np.testing.assert_allclose(ds, rds, **tol(dtype))


MULTI_SCALARS = {
    "sgd": dict(lr=0.1, wd=0.01),
    "sgd_momentum": dict(lr=0.1, mom=0.9, damp=0.1, wd=0.01, nesterov=1, first=0),
    "adam": dict(lr=0.01, b1=0.9, b2=0.99, eps=1e-8, bc1=0.19, inv_sqrt_bc2=7.1, wd=0.1, decoupled=1),
    "adam_amsgrad": dict(lr=0.01, b1=0.9, b2=0.99, eps=1e-8, bc1=0.19, inv_sqrt_bc2=7.1, wd=0.1, decoupled=0),
}


@pytest.mark.parametrize("dtype", DT)
@pytest.mark.parametrize("name", K.MULTI_TENSOR)
def test_multi_tensor_kernel_equals_the_single_tensor_kernel(libs, name, dtype):
    """The multi-tensor form (pointer table, binary search over the offsets, an empty tensor among
    them) updates every tensor exactly as the single-tensor kernel does on each one."""
    lib = libs[np.dtype(dtype).name]
    ins, outs, _ = K.ELEMENTWISE[name]
    params = [tuple(p.split()) for p in (ins + "," + outs).split(",")]
    arrays = [pname for kind, pname in params if kind == "T"]
    scalars = [(kind, pname) for kind, pname in params if kind != "T"]
    sizes = [N, 0, 5, N // 2]
    r = np.random.default_rng(1)
    tensors = {a: [r.uniform(0.1 if a in ("v", "vmax", "sq") else -1.0, 1.0, s).astype(dtype) for s in sizes]
               for a in arrays}
    want = {a: [t.copy() for t in ts] for a, ts in tensors.items()}
    for i, s in enumerate(sizes):  # the single-tensor kernel on each tensor (N elements, padded)
        if s == 0:
            continue
        padded = {a: np.concatenate([want[a][i], np.ones(N - s, dtype)]) for a in arrays}
        got = run(lib, name, dtype, **padded, **MULTI_SCALARS[name])
        for a in arrays:
            want[a][i] = got[a][:s]
    k = len(sizes)
    table = np.zeros(k + 1 + len(arrays) * k, dtype=np.int64)
    table[1:k + 1] = np.cumsum(sizes)
    for j, a in enumerate(arrays):
        table[k + 1 + j * k:k + 1 + (j + 1) * k] = [t.ctypes.data for t in tensors[a]]
    args = [table.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(k), ctypes.c_longlong(int(table[k]))]
    args += [CTYPES[kind](MULTI_SCALARS[name][pname]) for kind, pname in scalars]
    getattr(lib, f"nnx_multi_{name}")(*args)
    for a in arrays:
        for i in range(k):
            np.testing.assert_array_equal(tensors[a][i], want[a][i], err_msg=f"{name}: {a} of tensor {i}")
