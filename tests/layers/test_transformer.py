"""Transformer encoder/decoder layers and stacks: PyTorch float64 parity (output, input grads, every
parameter grad) in every mode from the same state_dict, gradcheck, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host, rand

D, NH, FF, T, S, N = 8, 2, 12, 4, 5, 2
MODES = [dict(norm_first=nf, activation=act, batch_first=bf)
         for nf, act, bf in itertools.product([False, True], ["relu", "gelu"], [False, True])]


def _ids(m):
    return ",".join(f"{k}={v}" for k, v in m.items())


def _x(t, bf, seed):
    return np.random.default_rng(seed).standard_normal((N, t, D) if bf else (t, N, D))


def _check_params(m, tm):
    tp = dict(tm.named_parameters())
    names = {n for n, _ in m.named_parameters()}
    assert names == set(tp), names ^ set(tp)
    for name, p in m.named_parameters():
        assert_close(p.grad, tp[name].grad, rtol=1e-8, atol=1e-10, what=name)


@pytest.mark.parametrize("mode", MODES, ids=_ids)
def test_encoder_layer_parity(backend, torch, mode):
    layer = nnx.TransformerEncoderLayer(D, NH, FF, dropout=0.0, dtype="float64", **mode)
    tl = torch.nn.TransformerEncoderLayer(D, NH, FF, dropout=0.0, dtype=torch.float64, **mode)
    copy_params_to_torch(layer, tl)
    xn = _x(T, mode["batch_first"], 1)
    kpm = np.zeros((N, T), dtype=bool)
    kpm[1, -1] = True
    am = np.triu(np.ones((T, T), dtype=bool), 1)
    y = layer(nnx.asarray(xn, dtype="float64"), src_mask=nnx.asarray(am), src_key_padding_mask=nnx.asarray(kpm),
              is_causal=True)
    tx = torch.tensor(xn, requires_grad=True)
    ty = tl(tx, src_mask=torch.tensor(am), src_key_padding_mask=torch.tensor(kpm), is_causal=True)
    assert_close(y, ty, rtol=1e-9, atol=1e-11, what="output")
    dy = np.random.default_rng(2).standard_normal(tuple(y.shape))
    (ty * torch.tensor(dy)).sum().backward()
    dx = layer.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-8, atol=1e-10, what="d src")
    _check_params(layer, tl)


@pytest.mark.parametrize("mode", MODES, ids=_ids)
def test_decoder_layer_parity(backend, torch, mode):
    layer = nnx.TransformerDecoderLayer(D, NH, FF, dropout=0.0, dtype="float64", **mode)
    tl = torch.nn.TransformerDecoderLayer(D, NH, FF, dropout=0.0, dtype=torch.float64, **mode)
    copy_params_to_torch(layer, tl)
    bf = mode["batch_first"]
    tn, mn = _x(T, bf, 1), _x(S, bf, 3)
    tm = np.triu(np.ones((T, T), dtype=bool), 1)
    mm = np.random.default_rng(4).standard_normal((T, S))
    mkpm = np.zeros((N, S), dtype=bool)
    mkpm[0, 1] = True
    y = layer(nnx.asarray(tn, dtype="float64"), nnx.asarray(mn, dtype="float64"), tgt_mask=nnx.asarray(tm),
              memory_mask=nnx.asarray(mm, dtype="float64"), memory_key_padding_mask=nnx.asarray(mkpm))
    tt, tmem = torch.tensor(tn, requires_grad=True), torch.tensor(mn, requires_grad=True)
    ty = tl(tt, tmem, tgt_mask=torch.tensor(tm), memory_mask=torch.tensor(mm),
            memory_key_padding_mask=torch.tensor(mkpm))
    assert_close(y, ty, rtol=1e-9, atol=1e-11, what="output")
    dy = np.random.default_rng(2).standard_normal(tuple(y.shape))
    (ty * torch.tensor(dy)).sum().backward()
    dt, dm = layer.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dt, tt.grad, rtol=1e-8, atol=1e-10, what="d tgt")
    assert_close(dm, tmem.grad, rtol=1e-8, atol=1e-10, what="d memory")
    _check_params(layer, tl)


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_parity(backend, torch, norm_first):
    kw = dict(dropout=0.0, norm_first=norm_first)
    enc = nnx.TransformerEncoder(nnx.TransformerEncoderLayer(D, NH, FF, dtype="float64", **kw), 2,
                                 norm=nnx.LayerNorm(D, dtype="float64"))
    dec = nnx.TransformerDecoder(nnx.TransformerDecoderLayer(D, NH, FF, dtype="float64", **kw), 2,
                                 norm=nnx.LayerNorm(D, dtype="float64"))
    tenc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(D, NH, FF, dtype=torch.float64, **kw), 2,
                                       norm=torch.nn.LayerNorm(D, dtype=torch.float64), enable_nested_tensor=False)
    tdec = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(D, NH, FF, dtype=torch.float64, **kw), 2,
                                       norm=torch.nn.LayerNorm(D, dtype=torch.float64))
    for m in (enc, dec):  # deep copies start equal: perturb so that the layers differ
        for _, p in m.named_parameters():
            p.data = nnx.asarray(host(p.data) + np.random.default_rng(p.size).standard_normal(p.shape) * 0.1,
                                 dtype="float64")
    copy_params_to_torch(enc, tenc)
    copy_params_to_torch(dec, tdec)
    src, tgt = _x(S, False, 1), _x(T, False, 2)
    mem = enc(nnx.asarray(src, dtype="float64"))
    y = dec(nnx.asarray(tgt, dtype="float64"), mem, tgt_is_causal=True,
            tgt_mask=nnx.asarray(np.triu(np.ones((T, T), dtype=bool), 1)))
    ts, tt = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
    ty = tdec(tt, tenc(ts), tgt_is_causal=True, tgt_mask=torch.tensor(np.triu(np.ones((T, T), dtype=bool), 1)))
    assert_close(y, ty, rtol=1e-9, atol=1e-11)
    dy = np.random.default_rng(5).standard_normal(tuple(y.shape))
    (ty * torch.tensor(dy)).sum().backward()
    dt, dm = dec.backward(nnx.asarray(dy, dtype="float64"))
    ds = enc.backward(dm)
    assert_close(dt, tt.grad, rtol=1e-8, atol=1e-10)
    assert_close(ds, ts.grad, rtol=1e-8, atol=1e-10)
    _check_params(enc, tenc)
    _check_params(dec, tdec)


@pytest.mark.parametrize("norm_first", [False, True])
def test_gradcheck_encoder_layer(backend, norm_first):
    layer = nnx.TransformerEncoderLayer(4, 2, 3, dropout=0.0, activation="gelu", norm_first=norm_first,
                                        dtype="float64")
    assert nnx.gradcheck(layer, rand(2, 1, 4, seed=1), forward_kwargs={"is_causal": True})


class _Dec(nnx.Module):
    def __init__(self, layer, memory):
        super().__init__()
        self.layer, self.memory = layer, memory

    def forward(self, x):
        return self.layer(x, self.memory)

    def backward(self, dy, *, input_grad=True):
        return self.layer.backward(dy)[0]


@pytest.mark.parametrize("norm_first", [False, True])
def test_gradcheck_decoder_layer(backend, norm_first):
    layer = nnx.TransformerDecoderLayer(4, 2, 6, dropout=0.0, norm_first=norm_first, dtype="float64")
    assert nnx.gradcheck(_Dec(layer, rand(2, 1, 4, seed=3)), rand(3, 1, 4, seed=1))


def test_dropout_is_active_in_training(backend):
    layer = nnx.TransformerEncoderLayer(8, 2, 16, dropout=0.5, dtype="float64")
    x = rand(4, 2, 8)
    a, b = host(layer(x)), host(layer(x))
    layer.clear_tape()
    assert not np.allclose(a, b)
    layer.eval()
    np.testing.assert_array_equal(host(layer(x)), host(layer(x)))


def test_errors(backend):
    with pytest.raises(ValueError, match="TransformerEncoderLayer: activation must be"):
        nnx.TransformerEncoderLayer(8, 2, activation="tanh")
    with pytest.raises(ValueError, match="MultiheadAttention: embed_dim must be divisible"):
        nnx.TransformerDecoderLayer(10, 3)
    layer = nnx.TransformerEncoderLayer(8, 2, 16, dtype="float64")
    with pytest.raises(ValueError, match="src_mask|attn_mask must have shape"):
        layer(rand(4, 2, 8), src_mask=nnx.asarray(np.zeros((3, 3), dtype=bool)))


def _grads(m):
    return {name: host(p.grad) for name, p in m.named_parameters()}


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("kind", ["encoder_layer", "decoder_layer", "encoder", "decoder"])
def test_backward_without_input_grad(backend, kind, norm_first):
    """``input_grad=False`` (what ``fit`` passes to a model's first module) returns no input gradient
    but exactly the same parameter gradients (and, for decoders, the same memory gradient)."""
    kw = dict(dropout=0.0, norm_first=norm_first, dtype="float64")
    decoder = kind.startswith("decoder")
    layer = (nnx.TransformerDecoderLayer if decoder else nnx.TransformerEncoderLayer)(D, NH, FF, **kw)
    m = layer if kind.endswith("layer") else (nnx.TransformerDecoder if decoder else nnx.TransformerEncoder)(layer, 2)
    x, mem = nnx.asarray(_x(T, False, 1), dtype="float64"), nnx.asarray(_x(S, False, 3), dtype="float64")
    dy = nnx.asarray(np.random.default_rng(2).standard_normal((T, N, D)), dtype="float64")
    results = []
    for input_grad in (True, False):
        m.zero_grad()
        m(x, mem) if decoder else m(x)
        results.append((m.backward(dy, input_grad=input_grad), _grads(m)))
    (full, g_full), (skipped, g_skipped) = results
    if decoder:
        assert skipped[0] is None and full[0] is not None
        assert_close(skipped[1], full[1], rtol=0, atol=0, what="d memory")
    else:
        assert skipped is None and full is not None
    for name, g in g_full.items():
        assert_close(g_skipped[name], g, rtol=0, atol=0, what=name)
