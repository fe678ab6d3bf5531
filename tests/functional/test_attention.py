"""scaled_dot_product_attention: PyTorch parity (outputs and q/k/v gradients), gradcheck for every mask
kind, causal, scale, dropout with a fixed mask and recompute mode; fully masked rows; errors."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host, rand

B, H, L, S, E = 2, 2, 3, 4, 5


def _masks(kind):
    rng = np.random.default_rng(1)
    if kind == "bool":
        m = rng.random((L, S)) > 0.3
        m[:, 0] = True
        return m
    if kind == "float":
        return rng.standard_normal((B, 1, L, S))
    return None


def _qkv():
    return rand(B, H, L, E, seed=1), rand(B, H, S, E, seed=2), rand(B, H, S, E + 1, seed=3)


CASES = [dict(kind=None), dict(kind="bool"), dict(kind="float"), dict(kind=None, is_causal=True),
         dict(kind="bool", scale=0.3), dict(kind=None, is_causal=True, scale=2.0)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("recompute", [False, True])
def test_parity_with_torch(backend, torch, case, recompute):
    q, k, v = _qkv()
    m = _masks(case["kind"])
    mask = None if m is None else nnx.asarray(m) if m.dtype == bool else nnx.asarray(m, dtype="float64")
    kw = {k_: case[k_] for k_ in ("is_causal", "scale") if k_ in case}
    out, bwd = F.scaled_dot_product_attention_forward(q, k, v, mask, recompute=recompute, **kw)
    tq, tk, tv = (torch.tensor(host(t), requires_grad=True) for t in (q, k, v))
    tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, None if m is None else torch.tensor(m), **kw)
    assert_close(out, tout, rtol=1e-10, atol=1e-12, what="out")
    dy = np.random.default_rng(5).standard_normal(tuple(out.shape))
    (tout * torch.tensor(dy)).sum().backward()
    dq, (dk, dv) = bwd(nnx.asarray(dy, dtype="float64"))
    for name, a, t in (("dq", dq, tq), ("dk", dk, tk), ("dv", dv, tv)):
        assert_close(a, t.grad, rtol=1e-9, atol=1e-11, what=name)


@pytest.mark.parametrize("case", CASES)
def test_gradcheck(backend, case):
    q, k, v = _qkv()
    m = _masks(case["kind"])
    mask = None if m is None else nnx.asarray(m) if m.dtype == bool else nnx.asarray(m, dtype="float64")
    kw = {k_: case[k_] for k_ in ("is_causal", "scale") if k_ in case}
    assert nnx.gradcheck(lambda a, b, c: F.scaled_dot_product_attention_forward(a, b, c, mask, **kw), q, k, v)


@pytest.mark.parametrize("recompute", [False, True])
def test_gradcheck_dropout_fixed_mask_and_recompute(backend, recompute):
    q, k, v = _qkv()
    keep = nnx.asarray(np.random.default_rng(7).random((B, H, L, S)) > 0.4)
    fn = lambda a, b, c: F.scaled_dot_product_attention_forward(  # noqa: E731
        a, b, c, None, 0.4, True, dropout_mask=keep, recompute=recompute)
    assert nnx.gradcheck(fn, q, k, v)
    out, _ = fn(q, k, v)
    ref, _ = F.scaled_dot_product_attention_forward(q, k, v, None, 0.0, True)
    assert not np.allclose(host(out), host(ref))  # the mask did something


def test_random_dropout_zeroes_and_scales(backend):
    q, k, v = rand(1, 1, 8, 4), rand(1, 1, 8, 4, seed=2), nnx.asarray(np.eye(8)[None, None], dtype="float64")
    out = host(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5))  # out = dropped probabilities
    p = host(F.scaled_dot_product_attention(q, k, v))
    kept = out != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(out[kept], 2.0 * p[kept], rtol=1e-12)


def test_random_dropout_mask_is_drawn_per_query_and_key(backend):
    """L != S, broadcast leading dims: the drawn mask has the (..., L, S) shape of the scores, and
    dropout_p=1 drops everything (output and gradients zero)."""
    q, k, v = rand(2, 3, 1, 3, 4, seed=1), rand(1, 1, 5, 4, seed=2), rand(1, 1, 5, 4, seed=3)
    out, bwd = F.scaled_dot_product_attention_forward(q, k, v, dropout_p=0.3)
    assert tuple(out.shape) == (2, 3, 1, 3, 4)
    out, bwd = F.scaled_dot_product_attention_forward(q, k, v, dropout_p=1.0)
    dq, (dk, dv) = bwd(nnx.asarray(np.ones(tuple(out.shape)), dtype="float64"))
    assert tuple(dq.shape) == tuple(q.shape) and tuple(dk.shape) == tuple(k.shape)
    for t in (out, dq, dk, dv):
        assert not np.any(host(t))


def test_leading_batch_dims_and_broadcast_kv(backend, torch):
    q = rand(2, 3, 4, L, E, seed=1)
    k, v = rand(4, S, E, seed=2), rand(4, S, E, seed=3)
    out, bwd = F.scaled_dot_product_attention_forward(q, k, v)
    tq, tk, tv = (torch.tensor(host(t), requires_grad=True) for t in (q, k, v))
    tout = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
    assert_close(out, tout, rtol=1e-10, atol=1e-12)
    tout.sum().backward()
    dq, (dk, dv) = bwd(nnx.asarray(np.ones(tuple(out.shape)), dtype="float64"))
    assert_close(dk, tk.grad, rtol=1e-9, atol=1e-11)
    assert_close(dv, tv.grad, rtol=1e-9, atol=1e-11)


def test_fully_masked_row_gives_zero_like_torch_sdpa(backend, torch):
    q, k, v = _qkv()
    m = np.ones((L, S), dtype=bool)
    m[1] = False
    out, bwd = F.scaled_dot_product_attention_forward(q, k, v, nnx.asarray(m))
    assert np.all(host(out)[:, :, 1] == 0.0)
    dq, _ = bwd(nnx.asarray(np.ones(tuple(out.shape)), dtype="float64"))
    assert np.all(host(dq)[:, :, 1] == 0.0) and np.isfinite(host(dq)).all()
    tout = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(host(t)) for t in (q, k, v)),
                                                            torch.tensor(m))
    assert_close(out, tout, rtol=1e-10, atol=1e-12)


def test_errors(backend):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="scaled_dot_product_attention: attn_mask must broadcast"):
        F.scaled_dot_product_attention(q, k, v, nnx.asarray(np.ones((L, S + 1), dtype=bool)))
    with pytest.raises(TypeError, match="scaled_dot_product_attention: attn_mask must be boolean"):
        F.scaled_dot_product_attention(q, k, v, nnx.asarray(np.ones((L, S), dtype=np.int64)))
    with pytest.raises(ValueError, match="query and key must share"):
        F.scaled_dot_product_attention(q, rand(B, H, S, E + 1), v)


def test_sinusoidal_positions(backend):
    p = host(nnx.functional.sinusoidal_positions(6, 5, dtype="float64"))
    t = np.arange(6)[:, None]
    assert p.shape == (6, 5)
    np.testing.assert_allclose(p[:, 0], np.sin(t[:, 0]), rtol=1e-12)
    np.testing.assert_allclose(p[:, 1], np.cos(t[:, 0]), rtol=1e-12)
    np.testing.assert_allclose(p[:, 2], np.sin(t[:, 0] / 10000 ** (2 / 5)), rtol=1e-12)
    np.testing.assert_allclose(p[:, 4], np.sin(t[:, 0] / 10000 ** (4 / 5)), rtol=1e-12)
