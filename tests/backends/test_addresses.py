"""The host kernels' array addresses (``nnx_backends.addresses.addr``): the same pointer as
``ndarray.ctypes.data`` for every kind of array a kernel is handed, NumPy's answer (or error) for
anything else, and the cheap read actually in use on CPython."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from nnx_backends import addresses


def _arrays():
    base = np.arange(2 * 3 * 40, dtype=np.float32).reshape(2, 3, 40)
    yield base
    yield base[1]
    yield base[:, 1:, 7:]
    yield base.transpose(2, 0, 1)
    yield base[..., ::-3]
    yield np.ones((), np.float64)
    yield np.empty((0, 5), np.float32)
    yield np.frombuffer(bytearray(100), dtype=np.uint8)[13:]
    yield np.zeros(10, np.int64)[9:]
    yield np.asarray(memoryview(bytearray(64)).cast("d"))


@pytest.mark.parametrize("i", range(10))
def test_addr_is_ctypes_data(i):
    a = list(_arrays())[i]
    assert addresses.addr(a) == a.ctypes.data


def test_fast_path_in_use_on_cpython():
    if sys.implementation.name != "cpython":
        pytest.skip(f"the direct read needs CPython's id(); this is {sys.implementation.name}")
    assert addresses.fast, "the import-time check rejected the direct read on CPython"
    assert addresses.addr is addresses._fast


def test_subclass_and_non_array_take_numpy():
    m = np.arange(6.0).view(np.ma.MaskedArray)  # a subclass: NumPy's own answer
    assert addresses.addr(m) == m.ctypes.data
    with pytest.raises(AttributeError):
        addresses.addr([1.0, 2.0])  # not an array: NumPy's error, never a read of a list's memory


def test_each_call_reads_the_current_array():
    a = np.zeros(8, np.float32)
    b = np.zeros(8, np.float32)
    assert addresses.addr(a) != addresses.addr(b)
    assert addresses.addr(a[2:]) == addresses.addr(a) + 2 * a.itemsize
