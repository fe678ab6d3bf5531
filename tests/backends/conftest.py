"""Fixtures of the host-kernel tests (``backends/host_kernels.c``)."""

from __future__ import annotations

import pytest

import nnx
import nnx_backends.host_kernels as HK
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
