"""nnx.from_dlpack and Module.to between backends: zero-copy on one device, copies only where documented."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx_backends


def _available(name: str) -> None:
    status = nnx.available_backends().get(name)
    if status is not True:
        pytest.skip(f"backend {name!r} not available here: {status}")


def _host_ptr(x) -> int:
    """The address of a CPU array's first element, read through DLPack (NumPy shares the memory)."""
    return np.from_dlpack(x).ctypes.data


CPU_PAIRS = [("numpy", "torch"), ("torch", "numpy"), ("numpy", "array_api_strict"), ("array_api_strict", "torch")]


@pytest.mark.parametrize("src,dst", CPU_PAIRS, ids=[f"{a}-to-{b}" for a, b in CPU_PAIRS])
def test_from_dlpack_shares_memory_on_the_cpu(src, dst):
    _available(src)
    _available(dst)
    x = nnx.asarray(np.arange(6, dtype=np.float64).reshape(2, 3), dtype="float64", backend=src)
    y = nnx.from_dlpack(x, backend=dst)
    assert nnx_backends.get(dst).owns(y)
    assert str(y.dtype).endswith("float64")  # the dtype is kept
    assert _host_ptr(y) == _host_ptr(x)
    y[0, 1] = 42.0  # a write through the new view is seen through the old one
    assert float(nnx.to_numpy(x)[0, 1]) == 42.0


def test_from_dlpack_into_the_current_backend(backend):
    host = np.arange(4, dtype=np.float32)
    y = nnx.from_dlpack(host)
    assert nnx.get_backend().owns(y)
    np.testing.assert_array_equal(nnx.to_numpy(y), host)
    if backend.host_memory and backend.name != "jax":  # XLA copies buffers it cannot align (documented)
        assert _host_ptr(y) == host.ctypes.data


def test_copy_true_always_copies_and_copy_false_refuses_read_only():
    _available("torch")
    x = np.zeros(3, dtype=np.float32)
    y = nnx.from_dlpack(x, backend="torch", copy=True)
    y[0] = 1.0
    assert x[0] == 0.0
    ro = np.arange(3.0)
    ro.flags.writeable = False
    safe = nnx.from_dlpack(ro, backend="torch")  # copy=None: a writable view of read-only memory is refused
    safe[0] = 9.0
    assert ro[0] == 0.0
    with pytest.raises(BufferError, match="read-only"):
        nnx.from_dlpack(ro, backend="torch", copy=False)


class _OnAnotherDevice:
    """A DLPack producer that says it lives on CUDA device 0 (to test the device check without a GPU)."""

    def __init__(self, arr):
        self._arr = arr

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return (2, 0)


def test_different_devices_need_a_copy():
    with pytest.raises(BufferError, match=r"CUDA:0 and backend 'numpy' on CPU:0"):
        nnx.from_dlpack(_OnAnotherDevice(np.zeros(2)), backend="numpy", copy=False)
    reason = nnx.dlpack.shares_memory_possible(_OnAnotherDevice(np.zeros(2)), "numpy")
    assert "CUDA:0" in reason


def test_not_an_array_is_a_clear_error():
    with pytest.raises(TypeError, match=r"nnx.from_dlpack: expected an object with __dlpack__.*builtins.list"):
        nnx.from_dlpack([1.0, 2.0])


def _model():
    nnx.manual_seed(0)
    return nnx.Sequential(nnx.Linear(3, 4), nnx.BatchNorm1d(4), nnx.ReLU(), nnx.Linear(4, 2)).eval()


@pytest.mark.parametrize("src,dst", CPU_PAIRS, ids=[f"{a}-to-{b}" for a, b in CPU_PAIRS])
def test_module_to_moves_no_bytes_between_cpu_backends(src, dst):
    _available(src)
    _available(dst)
    with nnx.use_backend(src):
        model = _model()
        x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
        want = nnx.to_numpy(model(nnx.asarray(x)))
    before = {k: v for k, v in model.state_dict().items()}
    model.to(dst)
    after = model.state_dict()
    assert all(nnx_backends.get(dst).owns(v) for v in after.values())
    for k, v in after.items():
        assert _host_ptr(v) == _host_ptr(before[k]), k  # same buffer: nothing was copied
    np.testing.assert_allclose(nnx.to_numpy(model(nnx.asarray(x, backend=dst))), want, rtol=1e-6)
    model.to(src)
    for k, v in model.state_dict().items():
        assert _host_ptr(v) == _host_ptr(before[k]), k
    after["0.weight"][0, 0] = 123.0  # the old and new arrays are one buffer
    assert float(nnx.to_numpy(model[0].weight.data)[0, 0]) == 123.0


def test_module_to_with_a_new_dtype_copies():
    _available("torch")
    with nnx.use_backend("numpy"):
        model = _model()
    w = model[0].weight.data
    model.to("torch", dtype="float64")
    assert str(model[0].weight.data.dtype) == "torch.float64"
    assert _host_ptr(model[0].weight.data) != w.ctypes.data
    np.testing.assert_allclose(nnx.to_numpy(model[0].weight.data), w, rtol=1e-7)


def _gpu_pair():
    for name in ("cupy", "torch"):
        _available(name)
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here: CuPy <-> torch CUDA exchange needs a GPU")


def test_cupy_and_torch_cuda_share_memory():
    _gpu_pair()
    x = nnx.asarray(np.arange(6, dtype=np.float32), backend="cupy")
    t = nnx.from_dlpack(x, backend="torch", device="cuda:0")
    assert t.data_ptr() == x.data.ptr
    t[1] = 42.0
    assert float(nnx.to_numpy(x)[1]) == 42.0
    back = nnx.from_dlpack(t, backend="cupy")
    assert back.data.ptr == x.data.ptr
    with pytest.raises(BufferError, match="CUDA:0 and backend 'numpy' on CPU:0"):
        nnx.from_dlpack(x, backend="numpy", copy=False)
    np.testing.assert_array_equal(nnx.from_dlpack(x, backend="numpy"), nnx.to_numpy(x))  # copy=None: copied


def test_module_to_between_cupy_and_torch_cuda_moves_no_bytes():
    _gpu_pair()
    with nnx.use_backend("cupy"):
        model = _model()
    ptrs = {k: v.data.ptr for k, v in model.state_dict().items()}
    model.to("torch", device="cuda:0")
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == ptrs


def test_a_second_logical_device_is_a_copy():
    """array_api_strict's device1 shares the CPU with CPU_DEVICE, but moving between them is a copy."""
    _available("array_api_strict")
    x = nnx.asarray(np.zeros(3), backend="array_api_strict")
    y = nnx.from_dlpack(x, backend="array_api_strict", device="device1")
    assert "device1" in str(y.device)
    y[0] = 1.0
    assert float(nnx.to_numpy(x)[0]) == 0.0
    with pytest.raises(BufferError, match="moving it there is a copy"):
        nnx.from_dlpack(x, backend="array_api_strict", device="device1", copy=False)
