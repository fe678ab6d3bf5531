"""nnx.data: DataLoader placement and dtypes, seeded reproducible shuffling, datasets and splits."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import nnx
import nnx_backends as backends

from helpers import host


def data(n=10, d=3):
    X = np.arange(n * d, dtype=np.float64).reshape(n, d)
    y = np.arange(n) % 4
    return X, y


def collect(loader):
    xs, ys = [], []
    for xb, yb in loader:
        xs.append(host(xb))
        ys.append(host(yb))
    return xs, ys


def test_batches_on_backend_with_dtypes(backend):
    X, y = data()
    loader = nnx.data.DataLoader((X, y), batch_size=4)
    assert len(loader) == 3
    xs, ys = collect(loader)
    assert [x.shape for x in xs] == [(4, 3), (4, 3), (2, 3)]
    for xb, yb in loader:
        assert backends.backend_of(xb) is backend and backends.backend_of(yb) is backend
        assert backends.Backend.dtype_name(xb.dtype) == "float32"  # floats become the default dtype
        assert backends.Backend.dtype_name(yb.dtype) == "int64"    # labels stay integers
    np.testing.assert_array_equal(np.concatenate(xs), X.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate(ys), y)


def test_drop_last_and_dtype_argument(backend):
    X, y = data()
    loader = nnx.data.DataLoader((X, y), batch_size=4, drop_last=True, dtype="float64")
    assert len(loader) == 2
    batches = list(loader)
    assert len(batches) == 2 and all(backends.Backend.dtype_name(b[0].dtype) == "float64" for b in batches)


def test_drop_last_keeps_a_complete_last_batch(backend):
    """drop_last drops only an incomplete batch: 12 samples in batches of 4 are 3 batches, all seen."""
    X, y = data(12)
    loader = nnx.data.DataLoader((X, y), batch_size=4, drop_last=True)
    assert len(loader) == 3
    seen = sorted(int(v) for _, yb in loader for v in nnx.to_numpy(yb).tolist())
    assert seen == sorted(int(v) for v in y.tolist())


def test_backend_argument_overrides_current(backend):
    X, y = data()
    loader = nnx.data.DataLoader((X, y), batch_size=5, backend="numpy")
    xb, yb = next(iter(loader))
    assert isinstance(xb, np.ndarray) and xb.dtype == np.float32


def test_one_transfer_per_array_and_batch(backend, monkeypatch):
    X, y = data(12)
    calls = []
    real = type(backend).asarray

    def counting(self, obj, dtype=None, copy=None):
        calls.append(type(obj).__module__)
        return real(self, obj, dtype=dtype, copy=copy)

    monkeypatch.setattr(type(backend), "asarray", counting)
    loader = nnx.data.DataLoader((X, y), batch_size=4, shuffle=True, seed=0)
    batches = list(loader)
    assert len(batches) == 3
    # exactly one host->backend transfer per array per batch, from a host array gathered in one pass
    assert len(calls) == 6 and set(calls) == {"numpy"}


def test_shuffle_is_a_function_of_seed_and_epoch(backend):
    X, y = data(50)
    a = nnx.data.DataLoader((X, y), batch_size=8, shuffle=True, seed=123)
    b = nnx.data.DataLoader((X, y), batch_size=8, shuffle=True, seed=123)
    first = np.concatenate(collect(a)[1])
    second = np.concatenate(collect(a)[1])
    assert sorted(first.tolist()) == sorted(y.tolist())          # every sample once
    assert not np.array_equal(first, second)                     # a new order each epoch
    b.set_epoch(1)                                               # epoch 1 of a fresh loader
    np.testing.assert_array_equal(np.concatenate(collect(b)[1]), second)
    c = nnx.data.DataLoader((X, y), batch_size=8, shuffle=True, seed=124)
    np.testing.assert_array_equal(a.indices(0), b.indices(0))
    assert not np.array_equal(a.indices(0), c.indices(0))
    state = a.state_dict()
    d = nnx.data.DataLoader((X, y), batch_size=8, shuffle=True, seed=1)
    d.load_state_dict(state)
    np.testing.assert_array_equal(d.indices(), a.indices())


def test_seed_from_manual_seed_and_generator(backend):
    X, y = data(30)
    nnx.manual_seed(7)
    a = nnx.data.DataLoader((X, y), batch_size=30, shuffle=True)
    nnx.manual_seed(7)
    b = nnx.data.DataLoader((X, y), batch_size=30, shuffle=True)
    nnx.manual_seed(8)
    c = nnx.data.DataLoader((X, y), batch_size=30, shuffle=True)
    np.testing.assert_array_equal(a.indices(0), b.indices(0))
    assert not np.array_equal(a.indices(0), c.indices(0))

    class Gen:
        def initial_seed(self):
            return 7

    g = nnx.data.DataLoader((X, y), batch_size=30, shuffle=True, generator=Gen())
    np.testing.assert_array_equal(g.indices(0), a.indices(0))
    assert nnx.data.DataLoader((X, y), shuffle=True, generator=7).seed == 7
    with pytest.raises(ValueError, match="not both"):
        nnx.data.DataLoader((X, y), seed=1, generator=2)


def test_backend_resident_dataset_stays_on_device(backend):
    X, y = data(9)
    Xd, yd = nnx.asarray(X, dtype="float64"), nnx.asarray(y)
    loader = nnx.data.DataLoader(nnx.data.TensorDataset(Xd, yd), batch_size=4, shuffle=True, seed=3)
    order = loader.indices(0)
    xs, ys = collect(loader)
    np.testing.assert_array_equal(np.concatenate(xs), X[order].astype(np.float32))
    np.testing.assert_array_equal(np.concatenate(ys), y[order])


def test_generic_dataset_and_single_array(backend):
    class Squares(nnx.data.Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return np.full(2, i * 0.5), i * i

    xs, ys = collect(nnx.data.DataLoader(Squares(), batch_size=3))
    np.testing.assert_array_equal(np.concatenate(ys), np.arange(7) ** 2)
    assert xs[0].dtype == np.float32 and ys[0].dtype == np.int64
    only = list(nnx.data.DataLoader(np.arange(5.0), batch_size=2))
    assert [tuple(b.shape) for b in only] == [(2,), (2,), (1,)]
    custom = list(nnx.data.DataLoader(Squares(), batch_size=4, collate_fn=lambda s: len(s)))
    assert custom == [4, 3]


def test_random_split_and_subset(backend):
    X, y = data(20)
    ds = nnx.data.TensorDataset(X, y)
    a, b = nnx.data.random_split(ds, [15, 5], seed=0)
    a2, b2 = nnx.data.random_split(ds, [0.75, 0.25], seed=0)
    assert len(a) == 15 and len(b) == 5
    np.testing.assert_array_equal(a.indices, a2.indices)
    assert sorted(a.indices.tolist() + b.indices.tolist()) == list(range(20))
    xs, ys = collect(nnx.data.DataLoader(b, batch_size=10))
    np.testing.assert_array_equal(ys[0], y[b.indices])
    np.testing.assert_array_equal(xs[0], X[b.indices].astype(np.float32))
    c, _ = nnx.data.random_split(ds, [15, 5], seed=1)
    assert not np.array_equal(c.indices, a.indices)
    with pytest.raises(ValueError, match="summing to 20"):
        nnx.data.random_split(ds, [10, 5])


def test_train_test_split(backend):
    X, y = data(40)
    Xtr, Xte, ytr, yte = nnx.data.train_test_split(X, y, test_size=0.25, seed=0)
    assert Xtr.shape == (30, 3) and Xte.shape == (10, 3)
    np.testing.assert_array_equal(Xtr[:, 0] // 3, ytr + 4 * (Xtr[:, 0] // 12))  # rows stay aligned
    assert sorted((Xtr[:, 0] // 3).tolist() + (Xte[:, 0] // 3).tolist()) == list(range(40))
    _, _, _, yte_s = nnx.data.train_test_split(X, y, test_size=0.5, seed=1, stratify=y)
    assert np.bincount(yte_s).tolist() == [5, 5, 5, 5]
    _, Xte_ns = nnx.data.train_test_split(X, test_size=4, shuffle=False)
    np.testing.assert_array_equal(Xte_ns, X[-4:])
    Xd = nnx.asarray(X)
    dtr, dte = nnx.data.train_test_split(Xd, test_size=0.25, seed=0)
    assert backends.backend_of(dtr) is backend
    np.testing.assert_array_equal(host(dte), Xte.astype(np.float32))
    with pytest.raises(ValueError, match="different lengths"):
        nnx.data.train_test_split(X, y[:5])


def test_load_digits():
    X, y = nnx.data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and 0.0 <= X.min() and X.max() == 1.0
    assert y.shape == (1797,) and y.dtype == np.int64 and sorted(set(y.tolist())) == list(range(10))
    imgs, _ = nnx.data.load_digits(images=True)
    assert imgs.shape == (1797, 1, 8, 8)


def test_load_digits_without_sklearn(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real(name, *args)

    monkeypatch.setattr(nnx.data.importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"scikit-learn.*nnx-backprop\[examples\]"):
        nnx.data.load_digits()


def test_bad_arguments():
    X, y = data()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        nnx.data.DataLoader((X, y), batch_size=0)
    with pytest.raises(ValueError, match="same first dimension"):
        nnx.data.TensorDataset(X, y[:3])
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        nnx.data.DataLoader(object())


def test_reversed_host_arrays_convert(backend):
    # regression: the torch adapter refused NumPy arrays with negative strides (x[::-1])
    X = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(host(nnx.asarray(X[::-1, ::-1])), X[::-1, ::-1].astype(np.float32))
    xb = next(iter(nnx.data.DataLoader(X[::-1], batch_size=4)))
    np.testing.assert_array_equal(host(xb), X[::-1].astype(np.float32))


def test_list_is_a_list_of_samples(backend):
    samples = [(np.full(3, float(i)), i) for i in range(5)]
    xs, ys = collect(nnx.data.DataLoader(samples, batch_size=5))
    np.testing.assert_array_equal(ys[0], np.arange(5))
    assert xs[0].shape == (5, 3)
    images = [np.full((4, 4), float(i)) for i in range(6)]  # equal-length arrays in a list: still samples
    (batch,) = list(nnx.data.DataLoader(images, batch_size=6))
    assert tuple(batch.shape) == (6, 4, 4)
