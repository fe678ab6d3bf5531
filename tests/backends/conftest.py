"""Fixtures of the host-kernel tests (``backends/host_kernels.c``)."""

from __future__ import annotations

import pytest

import nnx
import nnx_backends.host_kernels as HK
import nnx_backends.numpy_recurrent as R
import nnx_backends.threads as T


@pytest.fixture
def lib():
    """The loaded host kernels (skips with the build's reason where there are none: no compiler,
    ``NNX_HOST_KERNELS=0``)."""
    k = HK.kernels()
    if k is None:
        pytest.skip(f"host kernels unavailable: {HK.reason()}")
    return k


@pytest.fixture
def numpy_adapter(monkeypatch):
    """The NumPy adapter, with every pooled kernel split (no single-thread threshold); the thread
    setting is restored afterwards."""
    monkeypatch.setattr(T, "MIN_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(HK, "MIN_TASK_ELEMENTS", 0)  # and every task of the C pool
    old = T._state["threads"]
    with nnx.use_backend("numpy") as b:
        yield b
    nnx.set_num_threads(old if old is not None else T._default_threads())


@pytest.fixture
def own_gemm(lib):
    """``own_gemm(on)`` runs the host kernels' float32 products on nnx's GEMM (``host_gemm.c``) or
    on BLAS inside the test (skips turning it on where it is not built); restored afterwards."""
    before = lib.own_gemm

    def turn(on: bool) -> None:
        if on and not lib.own_gemm_available:
            pytest.skip("nnx's GEMM is not built here (the compiler does not target AVX-512 on this CPU)")
        lib.set_own_gemm(on)

    yield turn
    lib.set_own_gemm(before)


@pytest.fixture
def threads(monkeypatch):
    """``threads(n)`` sets the thread count inside a test with every task, product and time loop
    split (no size threshold); restored afterwards."""
    monkeypatch.setattr(HK, "MIN_TASK_ELEMENTS", 0)
    monkeypatch.setattr(T, "MIN_POOL_MACS", 0)
    monkeypatch.setattr(T, "MIN_OWN_POOL_MACS", 0)
    monkeypatch.setattr(T, "MIN_OWN_MACS", 0)
    monkeypatch.setattr(T, "MIN_POOL_SIDE", 1)
    monkeypatch.setattr(R, "MIN_SCAN_ROWS", 1)
    old = T._state["threads"]
    yield nnx.set_num_threads
    nnx.set_num_threads(old if old is not None else T._default_threads())
