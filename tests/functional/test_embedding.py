"""Embedding: lookup, scatter-add gradient (duplicates sum), padding_idx, max_norm, scale_grad_by_freq,
from_pretrained, PyTorch parity, gradient check, errors."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host

IDS = np.array([[1, 3, 3, 0], [4, 1, 0, 3]])  # repeated ids: their gradients must add up


def _ids():
    return nnx.asarray(IDS)


@pytest.mark.parametrize("kw", [{}, {"padding_idx": 0}, {"padding_idx": -2}, {"scale_grad_by_freq": True},
                                {"padding_idx": 3, "scale_grad_by_freq": True}])
def test_parity_with_torch(backend, torch, kw):
    emb = nnx.Embedding(6, 4, dtype="float64", **kw)
    temb = torch.nn.Embedding(6, 4, dtype=torch.float64, **kw)
    copy_params_to_torch(emb, temb)
    y = emb(_ids())
    ty = temb(torch.tensor(IDS))
    assert tuple(y.shape) == (2, 4, 4)
    assert_close(y, ty, rtol=1e-12, atol=0)
    dy = np.random.default_rng(0).standard_normal((2, 4, 4))
    (ty * torch.tensor(dy)).sum().backward()
    assert emb.backward(nnx.asarray(dy, dtype="float64")) is None  # integer ids: no input gradient
    assert_close(emb.weight.grad, temb.weight.grad, rtol=1e-12, atol=1e-14)


def test_duplicates_sum(backend):
    emb = nnx.Embedding(5, 2, dtype="float64")
    emb(nnx.asarray(np.array([2, 2, 2, 4])))
    emb.backward(nnx.asarray(np.ones((4, 2)), dtype="float64"))
    g = host(emb.weight.grad)
    np.testing.assert_array_equal(g[2], [3.0, 3.0])
    np.testing.assert_array_equal(g[4], [1.0, 1.0])
    np.testing.assert_array_equal(g[[0, 1, 3]], np.zeros((3, 2)))


def test_padding_idx_zero_row_and_no_grad(backend):
    emb = nnx.Embedding(5, 3, padding_idx=1)
    assert np.all(host(emb.weight.data)[1] == 0.0)
    assert np.any(host(emb.weight.data)[0] != 0.0)
    emb(nnx.asarray(np.array([1, 1, 2])))
    emb.backward(nnx.asarray(np.ones((3, 3))))
    np.testing.assert_array_equal(host(emb.weight.grad)[1], np.zeros(3))
    np.testing.assert_array_equal(host(emb.weight.grad)[2], np.ones(3))


@pytest.mark.parametrize("norm_type", [2.0, 1.0])
def test_max_norm_renormalises_like_torch(backend, torch, norm_type):
    emb = nnx.Embedding(6, 4, max_norm=1.0, norm_type=norm_type, dtype="float64")
    temb = torch.nn.Embedding(6, 4, max_norm=1.0, norm_type=norm_type, dtype=torch.float64)
    emb.weight.data = nnx.asarray(3.0 * host(emb.weight.data), dtype="float64")  # most rows exceed the norm
    copy_params_to_torch(emb, temb)
    ids = np.array([0, 2, 2, 5])
    y = emb(nnx.asarray(ids))
    ty = temb(torch.tensor(ids))
    assert_close(y, ty, rtol=1e-12, atol=1e-14)
    w = host(emb.weight.data)
    assert_close(w, temb.weight.detach(), rtol=1e-12, atol=1e-14)  # looked-up rows rescaled in place
    norms = np.linalg.norm(w[[0, 2, 5]], ord=norm_type, axis=1)
    assert np.all(norms <= 1.0 + 1e-6)
    assert np.linalg.norm(w[1], ord=norm_type) > 1.0  # rows not looked up are untouched
    dy = np.random.default_rng(0).standard_normal((4, 4))
    (ty * torch.tensor(dy)).sum().backward()
    emb.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(emb.weight.grad, temb.weight.grad, rtol=1e-12, atol=1e-14)


def test_gradcheck(backend):
    """The true gradient (padding_idx and scale_grad_by_freq deliberately depart from it, as in PyTorch)."""
    emb = nnx.Embedding(5, 3, dtype="float64")
    assert nnx.gradcheck(emb, nnx.asarray(np.array([[0, 2, 2], [4, 1, 0]])))


def test_from_pretrained_and_dtype(backend):
    table = nnx.asarray(np.arange(12.0).reshape(4, 3))
    emb = nnx.Embedding.from_pretrained(table)
    assert not emb.weight.requires_grad
    y = emb(nnx.asarray(np.array([3, 0])))
    np.testing.assert_array_equal(host(y), [[9.0, 10.0, 11.0], [0.0, 1.0, 2.0]])
    assert nnx.backend.Backend.dtype_name(y.dtype) == "float32"
    emb.backward(nnx.asarray(np.ones((2, 3))))
    assert emb.weight.grad is None  # frozen
    assert nnx.Embedding.from_pretrained(table, freeze=False).weight.requires_grad
    assert list(nnx.Embedding(3, 2).state_dict()) == ["weight"]


def test_init_normal(backend):
    w = host(nnx.Embedding(400, 50).weight.data)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1.0) < 0.02


def test_errors(backend):
    emb = nnx.Embedding(5, 3)
    with pytest.raises(TypeError, match=r"Embedding\(5, 3\): expected integer token ids, got dtype float32"):
        emb(nnx.asarray(np.array([1.0, 2.0])))
    b = nnx.get_backend()
    if b.host_memory:  # range checks read values: done where that is free, skipped on GPUs
        with pytest.raises(IndexError, match=r"Embedding\(5, 3\): token id 5 is out of range.*\[0, 4\]"):
            emb(nnx.asarray(np.array([0, 5])))
        with pytest.raises(IndexError, match=r"token id -1 is out of range"):
            emb(nnx.asarray(np.array([[-1, 2]])))
    with pytest.raises(ValueError, match="padding_idx must be an integer in"):
        nnx.Embedding(5, 3, padding_idx=5)
    with pytest.raises(ValueError, match="sparse=True is not supported"):
        nnx.Embedding(5, 3, sparse=True)
    with pytest.raises(ValueError, match="num_embeddings must be a positive integer"):
        nnx.Embedding(0, 3)
    with pytest.raises(TypeError, match=r"Embedding\(5, 3\)"):  # BackendMismatchError is a TypeError
        emb(np.array([1, 2]) if b.name != "numpy" else [1, 2])
