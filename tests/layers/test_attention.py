"""MultiheadAttention: PyTorch float64 parity (output, weights, input grads, every parameter grad) in
every mode, gradcheck, torch state_dict loads as is, errors."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host, rand

E, H, L, S, N = 8, 2, 3, 4, 2


def _np(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def _mask(kind, shape, seed=3):
    if kind is None:
        return None
    rng = np.random.default_rng(seed)
    if kind == "bool":
        m = rng.random(shape) < 0.3
        m[..., 0] = False  # every query keeps one key: no fully masked row (torch gives NaN there)
        return m
    return rng.standard_normal(shape)


CASES = [
    dict(),
    dict(self_attn=True),
    dict(attn="bool"), dict(attn="float"), dict(attn="bool3"), dict(kpm="bool"), dict(kpm="float", attn="float"),
    dict(causal=True, self_attn=True),
    dict(kdim=5, vdim=6), dict(add_bias_kv=True, kpm="bool"), dict(add_zero_attn=True, attn="bool"),
    dict(add_bias_kv=True, add_zero_attn=True), dict(batch_first=True, kpm="bool"), dict(bias=False),
    dict(average=False), dict(need_weights=False), dict(unbatched=True, attn="bool"),
    # self-attention runs the three projections as one GEMM; batch_first runs without transposes
    dict(self_attn=True, batch_first=True, kpm="bool"), dict(self_attn=True, unbatched=True),
    dict(self_attn=True, bias=False, average=False), dict(batch_first=True, add_bias_kv=True, add_zero_attn=True),
    dict(causal=True, self_attn=True, batch_first=True, add_bias_kv=True),
]


def _run(case, torch):
    kw = {k: case[k] for k in ("kdim", "vdim", "add_bias_kv", "add_zero_attn", "batch_first", "bias") if k in case}
    mha = nnx.MultiheadAttention(E, H, dtype="float64", **kw)
    tm = torch.nn.MultiheadAttention(E, H, dtype=torch.float64, **kw)
    copy_params_to_torch(mha, tm)
    bf, unb = case.get("batch_first", False), case.get("unbatched", False)

    def shape(t, d):
        return (t, d) if unb else (N, t, d) if bf else (t, N, d)
    qn = _np(shape(L, E), 1)
    if case.get("self_attn") or case.get("causal"):
        kn = vn = qn
    else:
        kn, vn = _np(shape(S, case.get("kdim", E)), 2), _np(shape(S, case.get("vdim", E)), 3)
    s = kn.shape[1] if bf and not unb else kn.shape[0]
    akind = case.get("attn")
    am = _mask("bool" if akind == "bool3" else akind, (N * H, L, s) if akind == "bool3" else (L, s))
    kpm = _mask(case.get("kpm"), (N, s), seed=4)
    if case.get("causal"):
        am = np.triu(np.ones((L, L), dtype=bool), 1)
    fk = dict(need_weights=case.get("need_weights", True), average_attn_weights="average" not in case)

    def conv(x):
        return None if x is None else nnx.asarray(x) if x.dtype == bool else nnx.asarray(x, dtype="float64")
    q, k, v = conv(qn), conv(kn), conv(vn)
    out, w = mha(q, k, v, key_padding_mask=conv(kpm), attn_mask=conv(am), is_causal=case.get("causal", False),
                 **fk)
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (qn, kn, vn))
    tt = lambda x: None if x is None else torch.tensor(x)  # noqa: E731
    tout, tw = tm(tq, tk if kn is not qn else tq, tv if vn is not qn else tq, key_padding_mask=tt(kpm),
                  attn_mask=tt(am), is_causal=case.get("causal", False), **fk)
    return mha, tm, (q, k, v), (tq, tk, tv), out, w, tout, tw, kn is qn


@pytest.mark.parametrize("case", CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "plain" for c in CASES])
def test_parity_with_torch(backend, torch, case):
    mha, tm, _, (tq, tk, tv), out, w, tout, tw, self_attn = _run(case, torch)
    assert_close(out, tout, rtol=1e-10, atol=1e-12, what="output")
    if tw is None:
        assert w is None
    else:
        assert_close(w, tw, rtol=1e-10, atol=1e-12, what="weights")
    dy = _np(tuple(out.shape), 7)
    loss = (tout * torch.tensor(dy)).sum()
    gw = None
    if tw is not None:
        gwn = _np(tuple(tw.shape), 8)
        loss = loss + (tw * torch.tensor(gwn)).sum()
        gw = nnx.asarray(gwn, dtype="float64")
    loss.backward()
    dq, dk, dv = mha.backward(nnx.asarray(dy, dtype="float64"), gw)
    if self_attn:
        assert_close(host(dq) + host(dk) + host(dv), tq.grad, rtol=1e-9, atol=1e-11, what="d input")
    else:
        for name, a, t in (("dq", dq, tq), ("dk", dk, tk), ("dv", dv, tv)):
            assert_close(a, t.grad, rtol=1e-9, atol=1e-11, what=name)
    tgrads = dict(tm.named_parameters())
    for name, p in mha.named_parameters():
        assert_close(p.grad, tgrads[name].grad, rtol=1e-9, atol=1e-11, what=name)
    assert set(tgrads) == {n for n, _ in mha.named_parameters()}


class _Wrap(nnx.Module):
    """Cross attention as a one-output module for nnx.gradcheck (query checked, key/value fixed)."""

    def __init__(self, mha, k, v, **kw):
        super().__init__()
        self.mha, self.k, self.v, self.kw = mha, k, v, kw

    def forward(self, q):
        return self.mha(q, self.k, self.v, need_weights=False, **self.kw)[0]

    def backward(self, dy, *, input_grad=True):
        dx = self.mha.backward(dy, input_grad=input_grad)
        return None if dx is None else dx[0]


class _Self(nnx.Module):
    """Self-attention (one tensor as query, key and value: the fused projection) for nnx.gradcheck."""

    def __init__(self, mha):
        super().__init__()
        self.mha = mha

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False, is_causal=True,
                        attn_mask=nnx.asarray(np.triu(np.ones((3, 3), dtype=bool), 1)))[0]

    def backward(self, dy, *, input_grad=True):
        return self.mha._backward_self(dy, input_grad=input_grad)


@pytest.mark.parametrize("bf,kv", [(False, False), (True, False), (True, True)])
def test_gradcheck_self_attention(backend, bf, kv):
    mha = nnx.MultiheadAttention(4, 2, dtype="float64", batch_first=bf, add_bias_kv=kv)
    assert nnx.gradcheck(_Self(mha), rand(2, 3, 4, seed=1) if bf else rand(3, 2, 4, seed=1))


@pytest.mark.parametrize("kw", [{}, {"add_bias_kv": True, "add_zero_attn": True}, {"kdim": 3, "vdim": 5}])
def test_gradcheck(backend, kw):
    mha = nnx.MultiheadAttention(4, 2, dtype="float64", **kw)
    k, v = rand(S, 1, kw.get("kdim", 4), seed=2), rand(S, 1, kw.get("vdim", 4), seed=3)
    kpm = nnx.asarray(np.array([[False, True, False, False]]))
    assert nnx.gradcheck(_Wrap(mha, k, v, key_padding_mask=kpm), rand(2, 1, 4, seed=1))


def test_torch_state_dict_loads(backend, torch):
    tm = torch.nn.MultiheadAttention(E, H, add_bias_kv=True, dtype=torch.float64)
    mha = nnx.MultiheadAttention(E, H, add_bias_kv=True, dtype="float64")
    mha.load_state_dict({k: nnx.asarray(v.numpy(), dtype="float64") for k, v in tm.state_dict().items()})
    assert sorted(mha.state_dict()) == sorted(tm.state_dict())


def test_errors(backend):
    with pytest.raises(ValueError, match=r"MultiheadAttention: embed_dim must be divisible by num_heads"):
        nnx.MultiheadAttention(10, 3)
    mha = nnx.MultiheadAttention(E, H, dtype="float64")
    x = rand(L, N, E)
    with pytest.raises(ValueError, match=r"MultiheadAttention\(embed_dim=8, num_heads=2\): attn_mask must have shape"):
        mha(x, x, x, attn_mask=nnx.asarray(np.zeros((L, L + 1), dtype=bool)))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape"):
        mha(x, x, x, key_padding_mask=nnx.asarray(np.zeros((L, N), dtype=bool)))
    with pytest.raises(TypeError, match=r"attn_mask must be boolean"):
        mha(x, x, x, attn_mask=nnx.asarray(np.zeros((L, L), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"query must have 8 features"):
        mha(rand(L, N, 4), x, x)
