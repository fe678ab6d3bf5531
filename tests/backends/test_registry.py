"""The backend registry and adapters: availability and reasons, unknown names, the CuPy probe without a GPU,
thread-safe use_backend, NNX_BACKEND, nnx.asarray's dtype policy, host round trips, random numbers,
scatter-add, erf, and third-party registration (directly and through entry points)."""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

import nnx
import nnx_backends as registry
from nnx_backends.base import Backend, erf_standard
from nnx_backends.numpy import NumpyBackend

from helpers import host, require_backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": ROOT, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, cwd=ROOT,
                          timeout=60)


# ----------------------------------------------------------------------------- registry basics
def test_available_on_this_machine():
    avail = nnx.available_backends()
    assert list(avail)[:5] == ["numpy", "array_api_strict", "torch", "cupy", "jax"]
    assert avail["numpy"] is True and avail["array_api_strict"] is True
    if importlib.util.find_spec("torch") is None:
        assert avail["torch"] == "PyTorch is not installed (pip install torch)"
    else:
        assert avail["torch"] is True
    if importlib.util.find_spec("cupy") is None:
        assert avail["cupy"].startswith("CuPy is not installed (pip install")
    else:
        assert avail["cupy"] is True or avail["cupy"].startswith("CuPy ")  # the reason may end with the runtime's words
    assert nnx.backend_names()[:4] == ["numpy", "array_api_strict", "torch", "cupy"]


@pytest.mark.parametrize("call", ["set_backend", "use_backend", "get", "asarray", "Linear"])
def test_unknown_backend_name_lists_registered_names(call):
    with pytest.raises(ValueError) as info:
        if call == "set_backend":
            nnx.set_backend("tensorflow")
        elif call == "use_backend":
            with nnx.use_backend("tensorflow"):
                pass
        elif call == "get":
            registry.get("tensorflow")
        elif call == "asarray":
            nnx.asarray([1.0], backend="tensorflow")
        else:
            nnx.Linear(2, 2, backend="tensorflow")
    msg = str(info.value)
    assert "unknown backend 'tensorflow'" in msg
    for name in ("numpy", "array_api_strict", "torch", "cupy", "jax"):
        assert repr(name) in msg
    assert nnx.get_backend().name != "tensorflow"


def test_get_caches_instances_and_devices():
    assert registry.get("numpy") is registry.get("numpy", "cpu") is registry.get("numpy", None)
    strict = registry.get("array_api_strict")
    assert registry.get("array_api_strict", "CPU_DEVICE") is strict
    other = registry.get("array_api_strict", "device1")
    assert other is not strict and other.device_name == "device1"
    x = other.asarray(np.ones(2))
    assert registry.backend_of(x) is other
    assert registry.backend_of(strict.asarray(np.ones(2))) is strict
    assert registry.get(strict) is strict  # a Backend passes through
    with pytest.raises(ValueError, match="backend 'numpy' has only the device 'cpu'; got 'cuda:0'"):
        registry.get("numpy", "cuda:0")
    with pytest.raises(TypeError, match="expected an array of an nnx backend, got builtins.list"):
        registry.backend_of([1.0])


def test_device_objects_share_the_instance(backend):
    """A device given as the library's object (what model.to() passes) is the same backend instance, with
    the same RNG; a duplicate would split the random stream and collide in RNG checkpoints."""
    assert registry.get(backend.name, backend.device) is backend
    count = len(registry.instances())
    model = nnx.Sequential(nnx.Linear(2, 2))
    model.to(dtype="float64")
    model.to(backend.name)
    assert len(registry.instances()) == count
    assert model.backend is backend


def test_backend_repr_and_dtype_helpers(backend):
    assert backend.name in repr(backend)
    assert Backend.dtype_name(backend.xp.float32) == "float32"
    assert Backend.dtype_name(np.float64) == "float64"
    assert backend.dtype("int64") == backend.xp.int64
    with pytest.raises(TypeError, match=f"backend {backend.name!r} has no dtype 'float128x'"):
        backend.dtype("float128x")


# ----------------------------------------------------------------------------- CuPy without a GPU
class _FailingImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A finder that makes ``import cupy`` raise as a broken CUDA installation does."""

    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "cupy" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise OSError("libcudart.so.12: cannot open shared object file")


def _fake_cupy(is_available):
    """A module that behaves as CuPy installed on a machine without a usable GPU."""
    mod = types.ModuleType("cupy")
    mod.is_available = is_available

    def get_device_count():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    mod.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return mod


def test_cupy_probe_installed_without_gpu(monkeypatch):
    from nnx_backends import cupy as cupy_adapter

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(lambda: False))
    reason = cupy_adapter.probe()
    assert reason.startswith("CuPy is installed but no usable CUDA GPU or driver was found")
    assert "cupy.is_available() is False" in reason
    assert "no CUDA-capable device is detected" in reason  # the runtime's own words
    assert nnx.available_backends()["cupy"] == reason
    with pytest.raises(nnx.BackendUnavailable, match=r"backend 'cupy' is not available: CuPy is installed but no"):
        nnx.set_backend("cupy")
    with pytest.raises(nnx.BackendUnavailable, match="cupy.is_available"):
        cupy_adapter.CupyBackend()
    assert nnx.get_backend().name != "cupy"


def test_cupy_probe_is_available_raises(monkeypatch):
    from nnx_backends import cupy as cupy_adapter

    def boom():
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(boom))
    assert cupy_adapter.probe() == ("CuPy is installed but cannot use a GPU: CUDA driver version is insufficient "
                                    "for CUDA runtime version")


def test_cupy_probe_import_raises(monkeypatch):
    from nnx_backends import cupy as cupy_adapter

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_FailingImport(), *sys.meta_path])
    reason = cupy_adapter.probe()
    assert reason == "CuPy failed to import: libcudart.so.12: cannot open shared object file"
    assert nnx.available_backends()["cupy"] == reason
    assert "cupy" not in sys.modules


def test_cupy_probe_not_installed(monkeypatch):
    from nnx_backends import cupy as cupy_adapter

    monkeypatch.setitem(sys.modules, "cupy", None)  # import raises ImportError
    assert cupy_adapter.probe().startswith("CuPy is not installed (pip install")


def test_real_cupy_reason():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed here; the fake-module tests cover the probe")
    from nnx_backends import cupy as cupy_adapter

    reason = cupy_adapter.probe()
    if cupy.is_available():
        assert reason is None
    else:
        assert isinstance(reason, str) and reason.startswith("CuPy") and len(reason.split()) > 5


# ----------------------------------------------------------------------------- current backend
def test_use_backend_is_thread_local():
    require_backend("torch")
    barrier = threading.Barrier(2, timeout=10)
    seen: dict[str, list] = {"numpy": [], "torch": []}
    errors = []

    def worker(name):
        try:
            for _ in range(5):
                with nnx.use_backend(name):
                    barrier.wait()  # both threads are inside their own use_backend now
                    seen[name].append((nnx.get_backend().name, type(nnx.asarray([1.0])).__module__))
                    barrier.wait()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    default = nnx.get_backend()
    threads = [threading.Thread(target=worker, args=(n,)) for n in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert seen["numpy"] == [("numpy", "numpy")] * 5
    assert seen["torch"] == [("torch", "torch")] * 5
    assert nnx.get_backend() is default


def test_use_backend_nests_and_restores():
    require_backend("torch")
    default = nnx.get_backend()
    with nnx.use_backend("torch") as b1:
        assert nnx.get_backend() is b1
        with nnx.use_backend("array_api_strict:device1") as b2:
            assert nnx.get_backend() is b2 and b2.device_name == "device1"
        assert nnx.get_backend() is b1
    assert nnx.get_backend() is default
    with pytest.raises(RuntimeError), nnx.use_backend("torch"):
        raise RuntimeError("inside")
    assert nnx.get_backend() is default


def test_set_backend_changes_default(monkeypatch):
    import nnx.backend as nb

    monkeypatch.setattr(nb, "_default", nb._default)  # restored after the test
    b = nnx.set_backend("array_api_strict")
    assert nnx.get_backend() is b
    assert type(nnx.Linear(2, 2).weight.data).__module__.startswith("array_api_strict")
    nnx.set_backend("numpy")
    assert nnx.get_backend().name == "numpy"


def test_nnx_backend_environment_variable():
    require_backend("torch")
    code = ("import nnx, backends; b = nnx.get_backend(); w = nnx.Linear(2, 2).weight.data; "
            "print(b.name, b.device_name, type(w).__module__)")
    out = _run_python(code, NNX_BACKEND="torch")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch", "cpu", "torch"]
    out = _run_python(code, NNX_BACKEND="array_api_strict:device1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["array_api_strict", "device1"]
    out = _run_python("import nnx; nnx.get_backend()", NNX_BACKEND="bogus")
    assert out.returncode != 0 and "unknown backend 'bogus'" in out.stderr


def test_fresh_process_accepts_torch_tensors():
    """Only NumPy is in use: torch tensors given to nnx are still recognised (no prior torch backend)."""
    require_backend("torch")
    code = ("import nnx, torch, numpy as np; m = nnx.Linear(2, 2); "
            "r = m.load_state_dict(torch.nn.Linear(2, 2).state_dict()); "
            "print(type(m.weight.data).__name__, type(nnx.asarray(torch.ones(2))).__name__, "
            "type(nnx.to_numpy(torch.ones(2))).__name__, r.missing_keys == r.unexpected_keys == [])")
    out = _run_python(code, NNX_BACKEND="numpy")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ndarray", "ndarray", "ndarray", "True"]


# ----------------------------------------------------------------------------- asarray dtype policy
def _dname(x):
    return Backend.dtype_name(x.dtype)


def test_asarray_dtype_policy(backend):
    assert _dname(nnx.asarray(np.random.rand(3, 2))) == "float32", "float64 host data becomes float32"
    assert _dname(nnx.asarray(np.ones(3, dtype=np.float32))) == "float32"
    assert _dname(nnx.asarray([1.0, 2.0])) == "float32"
    assert _dname(nnx.asarray([[1, 2], [3, 4.5]])) == "float32", "a float anywhere in a nested list"
    assert _dname(nnx.asarray([[1, 2], [3, 4]])) == "int64"
    assert _dname(nnx.asarray([True, False])) == "bool"
    assert _dname(nnx.asarray(2.5)) == "float32"
    assert _dname(nnx.asarray(np.arange(4))) == "int64", "class labels stay integers"
    assert _dname(nnx.asarray(np.arange(4, dtype=np.int32))) == "int32"
    assert _dname(nnx.asarray(np.array([1, 0], dtype=np.uint8))) == "uint8"
    assert _dname(nnx.asarray([1, 2, 3])) == "int64"
    assert _dname(nnx.asarray(np.array([True, False]))) == "bool"
    assert _dname(nnx.asarray(np.random.rand(3), dtype="float64")) == "float64", "explicit dtype is respected"
    assert _dname(nnx.asarray(np.arange(3), dtype="float64")) == "float64"
    assert _dname(nnx.asarray([1.5, 2.5], dtype=backend.xp.float64)) == "float64"
    assert backend.owns(nnx.asarray([1.0]))
    np.testing.assert_array_equal(host(nnx.asarray(np.arange(6.0).reshape(2, 3))), np.arange(6.0).reshape(2, 3))


def test_asarray_backend_argument_and_cross_backend(backend):
    require_backend("torch")
    x = nnx.asarray(np.ones((2, 2)), backend="numpy")
    assert type(x) is np.ndarray and x.dtype == np.float32
    t = nnx.asarray(np.ones(2), backend="torch", dtype="float64")
    assert type(t).__module__ == "torch" and _dname(t) == "float64"
    moved = nnx.asarray(t)  # another backend's array comes to the current backend (floats as float32)
    assert backend.owns(moved) and _dname(moved) == "float32"
    assert _dname(nnx.asarray(t, dtype="float64")) == "float64"
    np.testing.assert_array_equal(host(moved), [1.0, 1.0])
    if backend.name == "array_api_strict":
        d1 = nnx.asarray(np.ones(2), device="device1")
        assert "device1" in str(d1.device)
        back = nnx.asarray(d1)
        assert "CPU_DEVICE" in str(back.device)


def test_default_dtype(backend):
    assert nnx.get_default_dtype() == "float32"
    nnx.set_default_dtype("float64")
    try:
        assert _dname(nnx.asarray([1.0])) == "float64"
        assert _dname(nnx.Linear(2, 2).weight.data) == "float64"
    finally:
        nnx.set_default_dtype("float32")
    with pytest.raises(ValueError, match="set_default_dtype: expected 'float32', 'float64' or 'float16', got 'int8'"):
        nnx.set_default_dtype("int8")


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "bool"])
def test_to_numpy_round_trip(backend, dtype):
    src = (np.arange(12).reshape(3, 4) % 3 == 0) if dtype == "bool" else \
        (np.arange(12).reshape(3, 4) * 1.25).astype(dtype)
    x = nnx.asarray(src, dtype=dtype)
    back = nnx.to_numpy(x)
    assert isinstance(back, np.ndarray) and back.dtype == np.dtype(dtype) and back.shape == (3, 4)
    np.testing.assert_array_equal(back, src)
    np.testing.assert_array_equal(nnx.to_numpy(nnx.asarray(back, dtype=dtype)), src)
    assert nnx.to_numpy(src) is src  # host arrays pass through
    assert np.array_equal(backend.to_numpy(x), src)


# ----------------------------------------------------------------------------- random numbers
def _draws(b):
    return [host(b.uniform((50,), -2.0, 3.0, b.xp.float32)), host(b.normal((50,), 1.0, 2.0, b.xp.float64)),
            host(b.bernoulli((50,), 0.3, b.xp.float32)), host(b.permutation(20)), host(b.randint((30,), 3, 9))]


def test_manual_seed_reproducible_per_backend(backend):
    nnx.manual_seed(123)
    first = _draws(backend)
    w1 = host(nnx.Linear(4, 3).weight.data)
    nnx.manual_seed(123)
    second = _draws(backend)
    w2 = host(nnx.Linear(4, 3).weight.data)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(w1, w2)
    nnx.manual_seed(124)
    assert not np.array_equal(_draws(backend)[0], first[0])
    with pytest.raises(TypeError, match="manual_seed: expected an int, got float"):
        nnx.manual_seed(1.5)


def test_random_distributions(backend):
    nnx.manual_seed(7)
    u = host(backend.uniform((4000,), -2.0, 3.0, backend.xp.float32))
    assert u.dtype == np.float32 and u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.1
    z = host(backend.normal((4000,), 1.0, 2.0, backend.xp.float64))
    assert z.dtype == np.float64 and abs(z.mean() - 1.0) < 0.15 and abs(z.std() - 2.0) < 0.15
    m = host(backend.bernoulli((4000,), 0.3, backend.xp.float32))
    assert set(np.unique(m)) <= {0.0, 1.0} and abs(m.mean() - 0.3) < 0.03
    perm = host(backend.permutation(50))
    assert sorted(perm.tolist()) == list(range(50)) and perm.dtype == np.int64
    r = host(backend.randint((500,), 3, 9))
    assert r.min() == 3 and r.max() == 8 and r.dtype == np.int64


def test_rng_state_round_trip(backend):
    nnx.manual_seed(5)
    backend.normal((3,), 0.0, 1.0, backend.xp.float64)
    state = json.loads(json.dumps(backend.get_rng_state()))  # JSON-serialisable for checkpoints
    a = _draws(backend)
    backend.set_rng_state(state)
    b = _draws(backend)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=f"backend {backend.name!r}: cannot restore RNG state of kind 'bogus'"):
        backend.set_rng_state({"kind": "bogus"})


# ----------------------------------------------------------------------------- kernels beyond the standard
@pytest.mark.parametrize("fallback", [False, True], ids=["adapter", "standard_fallback"])
@pytest.mark.parametrize("trailing", [(3,), ()], ids=["rows", "vector"])
def test_scatter_add_sums_duplicate_indices(backend, fallback, trailing):
    idx_host = np.array([0, 2, 0, 4, 2, 0, 1])
    vals_host = np.random.default_rng(0).standard_normal((7, *trailing))
    expected = np.zeros((5, *trailing))
    np.add.at(expected, idx_host, vals_host)
    target = nnx.asarray(np.zeros((5, *trailing)), dtype="float64")
    idx = nnx.asarray(idx_host)
    vals = nnx.asarray(vals_host, dtype="float64")
    out = Backend.scatter_add(backend, target, idx, vals) if fallback else backend.scatter_add(target, idx, vals)
    np.testing.assert_allclose(host(out), expected, rtol=1e-14, atol=1e-15)
    assert _dname(out) == "float64"
    assert expected[0].sum() != 0 and np.any(expected[0] != vals_host[0])  # duplicates really add up


def test_scatter_add_float32(backend):
    target = nnx.asarray(np.ones((3, 2)), dtype="float32")
    out = backend.scatter_add(target, nnx.asarray(np.array([1, 1, 1])), nnx.asarray(np.ones((3, 2)), dtype="float32"))
    np.testing.assert_array_equal(host(out), [[1, 1], [4, 4], [1, 1]])
    assert _dname(out) == "float32"


def test_erf_accuracy_against_math_erf(backend):
    xs = np.concatenate([np.linspace(-7.0, 7.0, 2801), [-3.0, 3.0, -2.9999999, 3.0000001, 0.0, 1e-8, 30.0]])
    ref = np.array([math.erf(v) for v in xs])
    x = nnx.asarray(xs, dtype="float64")
    std = host(erf_standard(backend.xp, x))
    adapter = host(backend.erf(x))
    assert np.max(np.abs(std - ref)) < 5e-15
    assert np.max(np.abs(adapter - ref)) < 5e-15
    small = np.abs(xs) < 0.5  # relative accuracy near zero
    assert np.max(np.abs(std[small] - ref[small]) / np.maximum(np.abs(ref[small]), 1e-300)) < 1e-14
    x32 = nnx.asarray(xs[:50], dtype="float32")
    assert _dname(erf_standard(backend.xp, x32)) == "float32" and _dname(backend.erf(x32)) == "float32"


def test_qr_and_sliding_windows(backend):
    a = nnx.asarray(np.random.default_rng(1).standard_normal((5, 3)), dtype="float64")
    q, r = backend.qr(a)
    np.testing.assert_allclose(host(q) @ host(r), host(a), atol=1e-12)
    np.testing.assert_allclose(host(q).T @ host(q), np.eye(3), atol=1e-12)
    w = backend.sliding_windows(nnx.asarray(np.arange(5.0)), (3,), (0,))
    if w is not None:
        np.testing.assert_array_equal(host(w), [[0, 1, 2], [1, 2, 3], [2, 3, 4]])


# ----------------------------------------------------------------------------- third-party registration
@pytest.fixture
def clean_registry(monkeypatch):
    """Registration tests change the registry: restore every table afterwards."""
    for name in ("_factories", "_probes", "_instances", "_by_type"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(registry, "_entry_points_loaded", registry._entry_points_loaded)
    yield registry


class _CustomBackend(NumpyBackend):
    """A third-party adapter: NumPy arrays, its own name, records the device it was made for."""

    name = "custom"

    def __init__(self, device=None):
        super().__init__(None)
        self.requested_device = device


def test_register_custom_backend(clean_registry):
    made = []

    def factory(device):
        made.append(device)
        return _CustomBackend(device)

    registry.register("custom", factory, lambda: None)
    assert "custom" in nnx.backend_names() and nnx.available_backends()["custom"] is True
    with nnx.use_backend("custom") as b:
        assert isinstance(b, _CustomBackend) and made == [None]
        layer = nnx.Linear(2, 3)
        y = layer(nnx.asarray(np.ones((4, 2))))
        assert tuple(y.shape) == (4, 3)
    assert registry.get("custom") is b and made == [None], "instances are cached"
    registry.register("custom", lambda d: _CustomBackend("again"))  # re-registering replaces the instance
    assert registry.get("custom").requested_device == "again"
    registry.register("needs_tpu", factory, lambda: "no TPU on this machine")
    assert nnx.available_backends()["needs_tpu"] == "no TPU on this machine"
    with pytest.raises(nnx.BackendUnavailable, match="backend 'needs_tpu' is not available: no TPU on this machine"):
        nnx.set_backend("needs_tpu")


class _FakeEntryPoint:
    def __init__(self, name, obj=None, exc=None):
        self.name, self._obj, self._exc = name, obj, exc

    def load(self):
        if self._exc is not None:
            raise self._exc
        return self._obj


def test_entry_point_backends(clean_registry, monkeypatch):
    def plugin_a(register):
        register("plugin_a", lambda device: _CustomBackend(device), lambda: None)

    eps = [
        _FakeEntryPoint("plugin_a", plugin_a),
        _FakeEntryPoint("plugin_b", (lambda device: _CustomBackend(("b", device)), lambda: None)),
        _FakeEntryPoint("plugin_c", exc=ImportError("No module named 'nnx_plugin_c'")),
    ]
    groups = []

    def fake_entry_points(*, group=None, **kw):
        groups.append(group)
        return eps if group == "nnx.backends" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    names = nnx.backend_names()
    assert groups == ["nnx.backends"]
    assert names[:4] == ["numpy", "array_api_strict", "torch", "cupy"]
    assert {"plugin_a", "plugin_b", "plugin_c"} <= set(names)
    avail = nnx.available_backends()
    assert avail["plugin_a"] is True and avail["plugin_b"] is True
    assert avail["plugin_c"] == "entry point failed to load: No module named 'nnx_plugin_c'"
    assert isinstance(registry.get("plugin_a"), _CustomBackend)
    assert registry.get("plugin_b", "dev").requested_device == ("b", "dev")
    with pytest.raises(nnx.BackendUnavailable, match="plugin_c.*No module named 'nnx_plugin_c'"):
        registry.get("plugin_c")
    nnx.backend_names()
    assert groups == ["nnx.backends"], "entry points are read once"


# ------------------------------------------------------------------------- mutability and writes by index
class _ClaimsImmutable(NumpyBackend):
    """NumPy arrays (mutable) behind an adapter that wrongly says they are immutable."""

    name = "claims_immutable"
    mutable = False


class _ClaimsMutable(Backend):
    """JAX arrays (immutable) behind an adapter that wrongly says they are mutable."""

    name = "claims_mutable"

    def __init__(self, device=None):
        super().__init__()
        import jax.numpy as jnp

        self.xp, self.device, self.array_type = jnp, None, type(jnp.zeros(1))

    def asarray(self, obj, dtype=None, copy=None):
        return self.xp.asarray(obj, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)


def test_a_wrong_mutability_claim_is_refused_at_creation(clean_registry):
    registry.register("claims_immutable", lambda d: _ClaimsImmutable(d))
    with pytest.raises(ValueError, match=r"backend 'claims_immutable' declares mutable=False, but `b = a; b \+= 1` "
                                         r"changed `a`: set the adapter's `mutable` attribute to True"):
        registry.get("claims_immutable")
    pytest.importorskip("jax", reason="the immutable half of this check needs JAX (pip install jax)")
    registry.register("claims_mutable", lambda d: _ClaimsMutable(d))
    with pytest.raises(ValueError, match=r"declares mutable=True, but `b = a; b \+= 1` did not change `a`"):
        registry.get("claims_mutable")


def test_every_available_backend_declares_its_mutability_truthfully():
    for name, status in nnx.available_backends().items():
        if status is True:
            b = registry.get(name)  # the registry checks the claim on creation
            assert b.mutable is (name not in ("jax", "dask")), name


@pytest.mark.parametrize("kind", ["set", "add"])
def test_at_set_and_at_add_return_the_written_array(backend, kind):
    x = backend.asarray(np.arange(6.0).reshape(2, 3), dtype="float64")
    v = backend.asarray(np.array([10.0, 20.0]), dtype="float64")
    fn = backend.at_set if kind == "set" else backend.at_add
    out = fn(x, (slice(None), 1), v)
    want = np.arange(6.0).reshape(2, 3)
    want[:, 1] = [10.0, 20.0] if kind == "set" else want[:, 1] + [10.0, 20.0]
    np.testing.assert_array_equal(host(out), want)
    if backend.mutable:
        assert out is x, "a mutable backend writes in place"
    else:
        np.testing.assert_array_equal(host(x), np.arange(6.0).reshape(2, 3))  # immutable: x is untouched
