"""Fixtures of the host-kernel tests (``backends/host_kernels.c``)."""

from __future__ import annotations

import pytest

import nnx_backends.host_kernels as HK


@pytest.fixture
def lib():
    """The loaded host kernels (skips with the build's reason where there are none: no compiler,
    ``NNX_HOST_KERNELS=0``)."""
    k = HK.kernels()
    if k is None:
        pytest.skip(f"host kernels unavailable: {HK.reason()}")
    return k
