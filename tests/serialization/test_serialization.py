"""nnx.save/load and training checkpoints: round trips on every backend, cross-backend loading,
the pickle-free format, atomic writes (also under SIGKILL) and refusal of bad files before any
state changes."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import nnx
import nnx_backends as backends
from nnx_backends import host_io

from helpers import host

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_model(seed: int = 0) -> nnx.Module:
    nnx.manual_seed(seed)
    return nnx.Sequential(nnx.Linear(4, 6), nnx.ReLU(), nnx.Linear(6, 3))


def weights(model: nnx.Module) -> dict[str, np.ndarray]:
    return {k: host(v).copy() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def train_steps(model, opt, n=2, sched=None):
    x = nnx.asarray(np.random.default_rng(1).standard_normal((8, 4)))
    y = nnx.asarray(np.arange(8) % 3)
    loss_fn = nnx.CrossEntropyLoss()
    for _ in range(n):
        loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()


# ------------------------------------------------------------------------------------------ weights
def test_save_load_roundtrip(backend, tmp_path):
    model = make_model()
    path = tmp_path / "m.nnx"
    nnx.save(model, path)
    sd = nnx.load(path)
    assert list(sd) == list(model.state_dict())
    for k, v in sd.items():
        assert backends.backend_of(v) is backend
        np.testing.assert_array_equal(host(v), host(model.state_dict()[k]))
    other = make_model(seed=1)
    assert nnx.load(path, model=other) is other
    assert_same(weights(other), weights(model))
    # the file is a plain npz: NumPy reads it without pickle
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["model/0.weight"], host(model.state_dict()["0.weight"]))


def test_load_keeps_stored_dtypes_and_kinds(backend, tmp_path):
    sd = {"w64": nnx.asarray(np.arange(6.0).reshape(2, 3), dtype="float64"),
          "w32": nnx.asarray(np.ones(3)), "idx": nnx.asarray(np.arange(4)),
          "flag": nnx.asarray(np.array([True, False]))}
    nnx.save(sd, tmp_path / "s.nnx")
    back = nnx.load(tmp_path / "s.nnx")
    for k in sd:
        assert backends.Backend.dtype_name(back[k].dtype) == backends.Backend.dtype_name(sd[k].dtype)
        np.testing.assert_array_equal(host(back[k]), host(sd[k]))
    hosted = nnx.load(tmp_path / "s.nnx", backend="numpy")
    assert all(isinstance(v, np.ndarray) for v in hosted.values())


@pytest.mark.parametrize("other", ["numpy", "torch", "array_api_strict"])
def test_cross_backend(backend, other, tmp_path):
    if nnx.available_backends().get(other) is not True:
        pytest.skip(f"{other} not available")
    model = make_model()
    nnx.save(model, tmp_path / "m.nnx")
    with nnx.use_backend(other):
        target = make_model(seed=3)
        nnx.load(tmp_path / "m.nnx", model=target)
        assert backends.backend_of(target.state_dict()["0.weight"]).name == other
    assert_same(weights(target), weights(model))


def test_plain_npz_loads(tmp_path, backend):
    model = make_model()
    np.savez(tmp_path / "p.npz", **weights(model))
    fresh = make_model(seed=5)
    nnx.load(tmp_path / "p.npz", model=fresh)
    assert_same(weights(fresh), weights(model))


def test_strict_false_reports_keys(backend, tmp_path):
    model = make_model()
    sd = dict(model.state_dict())
    sd.pop("2.bias")
    sd["extra.weight"] = nnx.asarray(np.zeros(2))
    nnx.save(sd, tmp_path / "p.nnx")
    target = make_model(seed=2)
    before = weights(target)
    with pytest.raises(RuntimeError, match=r"missing keys \['2.bias'\].*unexpected keys \['extra.weight'\]"):
        nnx.load(tmp_path / "p.nnx", model=target)
    assert_same(weights(target), before)
    result = target.load_state_dict(nnx.load(tmp_path / "p.nnx"), strict=False)
    assert result.missing_keys == ["2.bias"] and result.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(host(target.state_dict()["0.weight"]), host(model.state_dict()["0.weight"]))
    np.testing.assert_array_equal(host(target.state_dict()["2.bias"]), before["2.bias"])


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_roundtrip(backend, tmp_path):
    model = make_model()
    opt = nnx.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train_steps(model, opt, 3, sched)
    extra = {"note": "hi", "pair": (1, 2.5), "inf": float("inf"), "ints": {3: "three"},
             "arr": nnx.asarray(np.arange(3))}
    nnx.save_checkpoint(tmp_path / "c.nnx", model=model, optimizer=opt, scheduler=sched, epoch=7, extra=extra)
    after_save = host(backend.uniform((5,), 0.0, 1.0, backend.xp.float64))

    m2 = make_model(seed=9)
    o2 = nnx.optim.Adam(m2.parameters(), lr=0.5)
    s2 = nnx.optim.lr_scheduler.StepLR(o2, step_size=1, gamma=0.5)
    info = nnx.load_checkpoint(tmp_path / "c.nnx", model=m2, optimizer=o2, scheduler=s2)
    assert info["epoch"] == 7
    assert info["extra"]["pair"] == (1, 2.5) and info["extra"]["inf"] == float("inf")
    assert info["extra"]["ints"] == {3: "three"} and list(info["extra"]["arr"]) == [0, 1, 2]
    assert info["meta"]["format_version"] == 1 and info["meta"]["backend"] == backend.name
    assert_same(weights(m2), weights(model))
    assert o2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.01 * 0.5 ** 3
    assert tuple(o2.param_groups[0]["betas"]) == (0.8, 0.9)
    assert s2.last_epoch == sched.last_epoch == 3
    for i, p in enumerate(model.parameters()):
        st, st2 = opt.state[p], o2.state[list(m2.parameters())[i]]
        assert st2["step"] == st["step"] == 3.0
        np.testing.assert_array_equal(host(st2["exp_avg"]), host(st["exp_avg"]))
        np.testing.assert_array_equal(host(st2["exp_avg_sq"]), host(st["exp_avg_sq"]))
    # the random generators continue exactly where they were at save time
    np.testing.assert_array_equal(host(backend.uniform((5,), 0.0, 1.0, backend.xp.float64)), after_save)
    # and training continues identically
    train_steps(model, opt, 2, sched)
    train_steps(m2, o2, 2, s2)
    assert_same(weights(m2), weights(model))


def test_checkpoint_plateau_scheduler_and_sgd(backend, tmp_path):
    model = make_model()
    opt = nnx.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = nnx.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    train_steps(model, opt, 2)
    sched.step(1.0)
    sched.step(2.0)
    nnx.save_checkpoint(tmp_path / "c.nnx", model=model, optimizer=opt, scheduler=sched, epoch=1)
    m2 = make_model(seed=4)
    o2 = nnx.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    s2 = nnx.optim.lr_scheduler.ReduceLROnPlateau(o2, patience=0)
    nnx.load_checkpoint(tmp_path / "c.nnx", model=m2, optimizer=o2, scheduler=s2)
    assert s2.best == 1.0 and o2.param_groups[0]["lr"] == pytest.approx(0.01)
    train_steps(model, opt, 1)
    train_steps(m2, o2, 1)
    assert_same(weights(m2), weights(model))


def _state(model, opt, sched):
    out = {"w": weights(model), "groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
           "sched": dict(sched.state_dict())}
    out["opt"] = {i: {k: (host(v).copy() if hasattr(v, "shape") else v) for k, v in st.items()}
                  for i, st in enumerate(opt.state.values())}
    return out


def _assert_state_equal(a, b):
    assert_same(a["w"], b["w"])
    assert a["groups"] == b["groups"] and a["sched"] == b["sched"]
    assert a["opt"].keys() == b["opt"].keys()
    for i in a["opt"]:
        for k in a["opt"][i]:
            np.testing.assert_array_equal(a["opt"][i][k], b["opt"][i][k])


@pytest.mark.parametrize("breakage", ["optimizer_shape", "scheduler_kind", "model_shape", "optimizer_groups",
                                      "model_dtype"])
def test_load_checkpoint_is_all_or_nothing(backend, tmp_path, breakage):
    src = make_model()
    src_opt = nnx.optim.Adam(src.parameters(), lr=0.01)
    src_sched = nnx.optim.lr_scheduler.StepLR(src_opt, step_size=2)
    train_steps(src, src_opt, 1, src_sched)
    path = tmp_path / "c.nnx"
    if breakage == "optimizer_shape":  # a model of the same keys but another layer size in the optimizer
        bigger = nnx.Sequential(nnx.Linear(4, 6), nnx.ReLU(), nnx.Linear(6, 3))
        bopt = nnx.optim.Adam(list(bigger.parameters())[::-1], lr=0.01)  # parameters in another order
        train_steps(bigger, bopt, 1)
        nnx.save_checkpoint(path, model=src, optimizer=bopt, scheduler=src_sched, epoch=1)
    elif breakage == "scheduler_kind":
        other = nnx.optim.lr_scheduler.CosineAnnealingLR(src_opt, T_max=5)
        nnx.save_checkpoint(path, model=src, optimizer=src_opt, scheduler=other, epoch=1)
    elif breakage == "model_shape":
        wrong = nnx.Sequential(nnx.Linear(4, 6), nnx.ReLU(), nnx.Linear(6, 4))
        nnx.save_checkpoint(path, model=wrong, optimizer=src_opt, scheduler=src_sched, epoch=1)
    elif breakage == "optimizer_groups":
        two = nnx.optim.Adam([{"params": list(src.parameters())[:2]}, {"params": list(src.parameters())[2:]}])
        nnx.save_checkpoint(path, model=src, optimizer=two, scheduler=src_sched, epoch=1)
    else:
        sd = dict(src.state_dict())
        sd["0.weight"] = nnx.asarray(np.ones((6, 4), dtype=np.int64))
        nnx.save_checkpoint(path, model=sd, optimizer=src_opt, scheduler=src_sched, epoch=1)

    model = make_model(seed=5)
    opt = nnx.optim.Adam(model.parameters(), lr=0.02)
    sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=2)
    train_steps(model, opt, 2, sched)
    before = _state(model, opt, sched)
    rng_before = backend.get_rng_state()
    with pytest.raises((nnx.CheckpointError, ValueError, RuntimeError, TypeError)) as err:
        nnx.load_checkpoint(path, model=model, optimizer=opt, scheduler=sched)
    assert str(err.value)
    _assert_state_equal(_state(model, opt, sched), before)
    assert backend.get_rng_state() == rng_before


def test_checkpoint_rng_of_unavailable_backend_is_skipped(tmp_path, backend):
    model = make_model()
    nnx.save_checkpoint(tmp_path / "c.nnx", model=model, epoch=0)
    arrays, meta = host_io.read_archive(tmp_path / "c.nnx")
    meta["tree"]["rng"]["nosuchbackend:cpu"] = {"kind": "x"}
    host_io.write_archive(tmp_path / "c.nnx", arrays, meta)
    info = nnx.load_checkpoint(tmp_path / "c.nnx", model=model)
    assert info["rng_skipped"] == ["nosuchbackend:cpu"]


# ------------------------------------------------------------------------------------------ bad files
def _good_file(tmp_path, backend_name="numpy"):
    model = make_model()
    path = tmp_path / "good.nnx"
    nnx.save(model, path)
    return model, path


def _expect_refused(path, match, backend):
    target = make_model(seed=11)
    before = weights(target)
    with pytest.raises(nnx.CheckpointError, match=match):
        nnx.load(path, model=target)
    assert_same(weights(target), before)


@pytest.mark.parametrize("cut", [0.0, 0.3, 0.6, 0.95])
def test_truncated_file_refused(backend, tmp_path, cut):
    _, path = _good_file(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "bad.nnx"
    bad.write_bytes(data[:int(len(data) * cut)])
    _expect_refused(bad, r"not an nnx checkpoint|truncated|corrupted", backend)


def test_corrupted_bytes_refused(backend, tmp_path):
    model, path = _good_file(tmp_path)
    data = bytearray(path.read_bytes())
    # flip a byte inside the data of the first weight matrix
    offset = bytes(data).find(host(model.state_dict()["0.weight"]).tobytes())
    assert offset > 0
    data[offset + 5] ^= 0xFF
    bad = tmp_path / "bad.nnx"
    bad.write_bytes(bytes(data))
    _expect_refused(bad, r"corrupted|CRC|Bad", backend)


def test_non_npz_files_refused(backend, tmp_path):
    for i, payload in enumerate([b"", b"hello world\n" * 10, pickle.dumps({"w": [1, 2, 3]})]):
        bad = tmp_path / f"bad{i}.nnx"
        bad.write_bytes(payload)
        _expect_refused(bad, "not an nnx checkpoint", backend)
    with pytest.raises(FileNotFoundError):
        nnx.load(tmp_path / "absent.nnx")


def _write_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_pickle_payloads_refused(backend, tmp_path):
    model = make_model()
    w = weights(model)
    # an object array (stored with pickle inside the .npy)
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = "a", None
    members = {k + ".npy": _npy(v) for k, v in w.items()}
    members["0.weight.npy"] = _npy(obj, allow_pickle=True)
    _write_zip(tmp_path / "obj.npz", members)
    _expect_refused(tmp_path / "obj.npz", "object arrays|dtype object", backend)
    # a raw pickle disguised as an array member
    members["0.weight.npy"] = pickle.dumps(np.zeros((6, 4)))
    _write_zip(tmp_path / "pkl.npz", members)
    _expect_refused(tmp_path / "pkl.npz", "not a valid .npy", backend)
    # a member that is not an array at all
    members["0.weight.npy"] = _npy(w["0.weight"])
    members["payload.pkl"] = pickle.dumps(1)
    _write_zip(tmp_path / "extra.npz", members)
    _expect_refused(tmp_path / "extra.npz", "unexpected member", backend)


def test_huge_declared_size_refused(backend, tmp_path):
    model = make_model()
    members = {k + ".npy": _npy(v) for k, v in weights(model).items()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (10**12,)})
    members["0.weight.npy"] = header.getvalue() + b"\0" * 64
    _write_zip(tmp_path / "huge.npz", members)
    _expect_refused(tmp_path / "huge.npz", "declares shape", backend)


def test_metadata_mismatch_and_future_version_refused(backend, tmp_path):
    _, path = _good_file(tmp_path)
    arrays, meta = host_io.read_archive(path)
    bad_meta = json.loads(json.dumps(meta))
    bad_meta["arrays"]["model/0.weight"]["shape"] = [4, 6]
    host_io.write_archive(tmp_path / "m1.nnx", arrays, bad_meta)
    _expect_refused(tmp_path / "m1.nnx", "metadata says", backend)
    future = json.loads(json.dumps(meta))
    future["format_version"] = 99
    host_io.write_archive(tmp_path / "m2.nnx", arrays, future)
    _expect_refused(tmp_path / "m2.nnx", "upgrade nnx", backend)
    missing = dict(arrays)
    missing.pop("model/0.bias")
    host_io.write_archive(tmp_path / "m3.nnx", missing, meta)
    _expect_refused(tmp_path / "m3.nnx", "declared but not stored", backend)
    with pytest.raises(nnx.CheckpointError, match="weights file, not a training checkpoint"):
        nnx.load_checkpoint(path, model=make_model())


def test_wrong_shape_and_dtype_refused_by_model(backend, tmp_path):
    model = make_model()
    sd = dict(model.state_dict())
    sd["2.weight"] = nnx.asarray(np.zeros((3, 7)))
    nnx.save(sd, tmp_path / "shape.nnx")
    target = make_model(seed=3)
    before = weights(target)
    with pytest.raises(ValueError, match=r"'2.weight' has shape \(3, 7\)"):
        nnx.load(tmp_path / "shape.nnx", model=target)
    sd["2.weight"] = nnx.asarray(np.zeros((3, 6), dtype=np.int64))
    nnx.save(sd, tmp_path / "dtype.nnx")
    with pytest.raises(TypeError, match="'2.weight' has dtype int64"):
        nnx.load(tmp_path / "dtype.nnx", model=target)
    assert_same(weights(target), before)


# ------------------------------------------------------------------------------------------ atomic saving
def test_failed_save_leaves_previous_file(tmp_path, monkeypatch):
    model = make_model()
    path = tmp_path / "m.nnx"
    nnx.save(model, path)
    good = path.read_bytes()
    calls = {"n": 0}
    real = np.lib.format.write_array

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        nnx.save(make_model(seed=1), path)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["m.nnx"]  # the temporary file was removed


def test_saved_file_gets_normal_permissions(tmp_path):
    nnx.save(make_model(), tmp_path / "m.nnx")
    (tmp_path / "plain").write_bytes(b"")
    assert os.stat(tmp_path / "m.nnx").st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777


def test_sigkill_during_save_keeps_previous_file(tmp_path):
    """A process killed with SIGKILL in the middle of nnx.save leaves a loadable previous file."""
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    path = tmp_path / "big.nnx"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import numpy as np
        import nnx
        nnx.set_backend("numpy")
        i = 0
        while True:
            sd = {{f"w{{k}}": np.full((256, 1024), float(i), dtype=np.float32) for k in range(16)}}  # 16 MiB
            nnx.save(sd, {str(path)!r})
            if i == 0:
                print("ready", flush=True)
            i += 1
    """)
    for delay in (0.05, 0.23, 0.41):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        sd = nnx.load(path, backend="numpy")
        assert len(sd) == 16
        value = sd["w0"][0, 0]
        for v in sd.values():  # one complete save, never a mix of two
            assert v.shape == (256, 1024) and (v == value).all()
        for leftover in tmp_path.glob(".big.nnx.*.tmp"):
            leftover.unlink()


@pytest.mark.parametrize("other", ["numpy", "torch", "array_api_strict"])
def test_checkpoint_cross_backend(backend, other, tmp_path):
    if nnx.available_backends().get(other) is not True:
        pytest.skip(f"{other} not available")
    model = make_model()
    opt = nnx.optim.Adam(model.parameters(), lr=0.01)
    train_steps(model, opt, 2)
    nnx.save_checkpoint(tmp_path / "c.nnx", model=model, optimizer=opt, epoch=1)
    train_steps(model, opt, 1)
    with nnx.use_backend(other):
        m2 = make_model(seed=3)
        o2 = nnx.optim.Adam(m2.parameters(), lr=0.01)
        nnx.load_checkpoint(tmp_path / "c.nnx", model=m2, optimizer=o2)
        assert all(backends.backend_of(v).name == other for st in o2.state.values() for v in st.values()
                   if hasattr(v, "shape"))
        train_steps(m2, o2, 1)
    for k, v in weights(model).items():
        np.testing.assert_allclose(weights(m2)[k], v, rtol=1e-5, atol=1e-6)


def test_scheduler_load_state_dict_is_atomic(backend):
    # regression: LRScheduler.load_state_dict updated its attributes before computing the rate
    opt = nnx.optim.SGD(make_model().parameters(), lr=0.1)
    sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    before = dict(sched.state_dict())
    with pytest.raises(TypeError):
        sched.load_state_dict({"last_epoch": "three", "step_size": 1})
    assert sched.state_dict() == before and opt.param_groups[0]["lr"] == 0.05


def test_safetensors_format(backend, tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    model = make_model()
    opt = nnx.optim.Adam(model.parameters(), lr=0.01)
    train_steps(model, opt, 2)
    nnx.save(model, tmp_path / "m.safetensors")
    from safetensors.numpy import load_file  # a standard safetensors file, readable by other tools

    assert set(load_file(tmp_path / "m.safetensors")) == {f"model/{k}" for k in model.state_dict()}
    target = make_model(seed=4)
    nnx.load(tmp_path / "m.safetensors", model=target)
    assert_same(weights(target), weights(model))
    nnx.save_checkpoint(tmp_path / "c.safetensors", model=model, optimizer=opt, epoch=1)
    o2 = nnx.optim.Adam(target.parameters(), lr=0.5)
    assert nnx.load_checkpoint(tmp_path / "c.safetensors", model=target, optimizer=o2)["epoch"] == 1
    assert o2.state_dict()["state"][0]["step"] == 2.0
    data = (tmp_path / "m.safetensors").read_bytes()
    for cut in (4, len(data) // 2, len(data) - 3):
        (tmp_path / "bad.safetensors").write_bytes(data[:cut])
        _expect_refused(tmp_path / "bad.safetensors", "truncated|does not fit", backend)
    import builtins

    real_import = builtins.__import__

    def no_safetensors(name, *args, **kwargs):
        if name.startswith("safetensors"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    with pytest.raises(ImportError, match=r"nnx-backprop\[safetensors\]"):
        nnx.save(model, tmp_path / "x.safetensors")


# ------------------------------------------------------------------------------------ hardening
def test_safetensors_bit_flip_is_refused_and_foreign_files_still_load(backend, tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="pip install safetensors")
    model = make_model()
    path = tmp_path / "m.safetensors"
    nnx.save(model, path)
    data = bytearray(path.read_bytes())
    offset = bytes(data).find(host(model.state_dict()["0.weight"]).tobytes())
    assert offset > 0
    data[offset + 5] ^= 0x01  # one flipped bit in the tensor data: safetensors has no checksum of its own
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    _expect_refused(bad, "does not match the SHA-256 digest", backend)
    foreign = tmp_path / "foreign.safetensors"  # written by another tool: no digest, loads as is
    foreign.write_bytes(st.save(weights(model)))
    assert_same({k: host(v) for k, v in nnx.load(foreign).items()}, weights(model))


def _bomb(path, members: int, member_bytes: int):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            with zf.open(f"w{i}.npy", "w") as f:
                arr_header = _npy(np.zeros(0, dtype=np.uint8))[:-0 or None]
                f.write(arr_header)
                chunk = bytes(1 << 20)
                for _ in range(member_bytes >> 20):
                    f.write(chunk)


def test_zip_bomb_total_is_bounded_before_decompressing(backend, tmp_path):
    bomb = tmp_path / "bomb.nnx"
    _bomb(bomb, members=4, member_bytes=8 << 20)  # 32 MiB of zeros in a file of ~32 KiB
    assert bomb.stat().st_size < 200_000
    with pytest.raises(nnx.CheckpointError, match=r"unpacks to \d+ bytes, more than the \d+ allowed"):
        nnx.load(bomb, model=make_model())  # bound by the model's own size
    with pytest.raises(host_io.ArchiveError, match="more than the 1048576 allowed"):
        host_io.read_archive(bomb, max_bytes=1 << 20)  # the documented bound without a model


def test_duplicate_members_are_refused(backend, tmp_path):
    model = make_model()
    good = tmp_path / "good.nnx"
    nnx.save(model, good)
    with zipfile.ZipFile(good) as zf:
        meta = zf.read(host_io.META_NAME)
    dup = tmp_path / "dup.nnx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dup, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name: that is the point
            dst.writestr(host_io.META_NAME, meta.replace(b'"format_version"', b'"format_version_"'))
    _expect_refused(dup, "appears twice", backend)


def test_encrypted_member_deep_json_and_bool_shapes_are_refused_clearly(backend, tmp_path):
    w = weights(make_model())
    enc = tmp_path / "enc.nnx"
    _write_zip(enc, {"0.weight.npy": _npy(w["0.weight"])})
    raw = bytearray(enc.read_bytes())  # set the "encrypted" flag bit in the local and the central header
    raw[raw.find(b"PK\x03\x04") + 6] |= 0x1
    raw[raw.find(b"PK\x01\x02") + 8] |= 0x1
    enc.write_bytes(bytes(raw))
    _expect_refused(enc, "is encrypted", backend)
    deep = tmp_path / "deep.nnx"
    _write_zip(deep, {host_io.META_NAME: b"[" * 100_000 + b"]" * 100_000})
    _expect_refused(deep, "nested too deeply|must be a JSON object", backend)
    deep_obj = tmp_path / "deep_obj.nnx"
    _write_zip(deep_obj, {host_io.META_NAME: b'{"a":' + b"[" * 100 + b"]" * 100 + b"}"})
    _expect_refused(deep_obj, "nested more than 64 levels deep", backend)
    boolean = tmp_path / "bool.nnx"
    header = _npy(np.zeros((1, 48), dtype=np.float32)).replace(b"(1, 48)", b"(True, 48)")
    _write_zip(boolean, {"0.weight.npy": header})
    _expect_refused(boolean, r"invalid shape \(True, 48\)", backend)


def test_stale_temporaries_of_killed_saves_are_removed(backend, tmp_path):
    path = tmp_path / "m.nnx"
    stale = tmp_path / ".m.nnx.k1ll3d.tmp"
    fresh = tmp_path / ".m.nnx.running.tmp"  # a concurrent save in progress: must survive
    other = tmp_path / ".other.nnx.k1ll3d.tmp"  # another target's: not ours to touch
    for f in (stale, fresh, other):
        f.write_bytes(b"partial")
    old = time.time() - host_io.STALE_TEMPORARY_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    nnx.save(make_model(), path)
    assert not stale.exists() and fresh.exists() and other.exists()


def test_negative_epoch_is_refused_before_anything_is_loaded(backend, tmp_path):
    model, opt = make_model(), None
    path = tmp_path / "ck.nnx"
    nnx.save_checkpoint(path, model=model, epoch=3)
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members[host_io.META_NAME] = members[host_io.META_NAME].replace(b'"epoch": 3', b'"epoch": -5')
    bad = tmp_path / "bad.nnx"
    _write_zip(bad, members)
    target = make_model(seed=5)
    before = weights(target)
    with pytest.raises(nnx.CheckpointError, match=r"epoch must be an int >= 0, got -5"):
        nnx.load_checkpoint(bad, model=target)
    assert_same(weights(target), before)
    assert opt is None


def test_save_fsyncs_the_data_before_the_rename_and_the_directory_after(backend, tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else None))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", None))
        return real_replace(src, dst)

    monkeypatch.setattr(host_io.os, "fsync", fsync)
    monkeypatch.setattr(host_io.os, "replace", replace)
    nnx.save(make_model(), tmp_path / "m.nnx")
    kinds = [k for k, _ in events]
    assert kinds.index("fsync") < kinds.index("replace"), "the file's data reaches the disk before the rename"
    assert kinds[-1] == "fsync" and kinds.count("fsync") == 2, "the directory entry is made durable after it"
    if events[0][1] is not None:
        assert events[0][1] is False and events[-1][1] is True  # first the file, last the directory
