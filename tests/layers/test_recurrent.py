"""RNN, LSTM and GRU layers: PyTorch parity (outputs, final states, input, state and parameter
gradients), numerical gradient checks, variable lengths, dropout, dtype, state_dict layout."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host, rand

T, B, IN, H = 4, 3, 3, 2  # steps, batch, input size, hidden size
LENGTHS = [4, 1, 3]

MODES = {
    "rnn_tanh": (lambda **kw: nnx.RNN(IN, H, **kw), "RNN", {}),
    "rnn_relu": (lambda **kw: nnx.RNN(IN, H, nonlinearity="relu", **kw), "RNN", {"nonlinearity": "relu"}),
    "lstm": (lambda **kw: nnx.LSTM(IN, H, **kw), "LSTM", {}),
    "gru": (lambda **kw: nnx.GRU(IN, H, **kw), "GRU", {}),
}

CONFIGS = {
    "default": {},
    "2layer_bidir": {"num_layers": 2, "bidirectional": True},
    "batch_first_2layer": {"batch_first": True, "num_layers": 2},
    "no_bias_bidir": {"bias": False, "bidirectional": True},
}


def _states(mode_name: str, kw: dict, batch: int | None = B, seed: int = 7):
    """Initial state(s) for the configuration, as nnx arrays (tuple for the LSTM)."""
    d = 2 if kw.get("bidirectional") else 1
    shape = (kw.get("num_layers", 1) * d, batch, H) if batch is not None else (kw.get("num_layers", 1) * d, H)
    h0 = rand(*shape, seed=seed)
    if mode_name == "lstm":
        return (h0, rand(*shape, seed=seed + 1))
    return h0


def _torch_run(torch, tm, tx, thx, lengths, batch_first):
    if lengths is None:
        out, st = tm(tx, thx)
        return out, st
    packed = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.tensor(lengths), batch_first=batch_first,
                                                     enforce_sorted=False)
    out, st = tm(packed, thx)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return out, st


def _flat_states(st, is_lstm):
    return [st[0], st[1]] if is_lstm else [st]


def _parity(backend, torch, mode_name, kw, with_hx, lengths):
    factory, tname, tkw = MODES[mode_name]
    is_lstm = mode_name == "lstm"
    m = factory(dtype="float64", **kw)
    tm = getattr(torch.nn, tname)(IN, H, dtype=torch.float64, **tkw, **kw)
    copy_params_to_torch(m, tm)
    bf = kw.get("batch_first", False)
    xs = np.random.default_rng(0).standard_normal((B, T, IN) if bf else (T, B, IN))
    x = nnx.asarray(xs, dtype="float64")
    tx = torch.tensor(xs, requires_grad=True)
    hx = thx = None
    if with_hx:
        hx = _states(mode_name, kw)
        if is_lstm:
            thx = tuple(torch.tensor(host(s), requires_grad=True) for s in hx)
        else:
            thx = torch.tensor(host(hx), requires_grad=True)
    out, st = m(x, hx, lengths=lengths)
    tout, tst = _torch_run(torch, tm, tx, thx, lengths, bf)
    assert_close(out, tout, rtol=1e-9, atol=1e-10, what="output")
    for a, e in zip(_flat_states(st, is_lstm), _flat_states(tst, is_lstm), strict=True):
        assert_close(a, e, rtol=1e-9, atol=1e-10, what="final state")
    rng = np.random.default_rng(1)
    g_out = rng.standard_normal(tuple(out.shape))
    g_states = [rng.standard_normal(tuple(s.shape)) for s in _flat_states(st, is_lstm)]
    loss = (tout * torch.tensor(g_out)).sum()
    for s, g in zip(_flat_states(tst, is_lstm), g_states, strict=True):
        loss = loss + (s * torch.tensor(g)).sum()
    loss.backward()
    grads = m.backward(nnx.asarray(g_out, dtype="float64"), *[nnx.asarray(g, dtype="float64") for g in g_states])
    if with_hx:
        dx, dhx = grads
        if is_lstm:
            assert_close(dhx[0], thx[0].grad, rtol=1e-8, atol=1e-10, what="dh0")
            assert_close(dhx[1], thx[1].grad, rtol=1e-8, atol=1e-10, what="dc0")
        else:
            assert_close(dhx, thx.grad, rtol=1e-8, atol=1e-10, what="dh0")
    else:
        dx = grads
    assert_close(dx, tx.grad, rtol=1e-8, atol=1e-10, what="dx")
    tparams = dict(tm.named_parameters())
    names = [n for n, _ in m.named_parameters()]
    assert names == list(tparams), "parameter names and order must match PyTorch"
    for name, p in m.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=1e-8, atol=1e-10, what=f"grad of {name}")


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("mode_name", list(MODES))
def test_parity_with_torch(backend, torch, mode_name, config):
    _parity(backend, torch, mode_name, CONFIGS[config], with_hx=config != "default", lengths=None)


@pytest.mark.parametrize("config", ["default", "2layer_bidir", "batch_first_2layer"])
@pytest.mark.parametrize("mode_name", list(MODES))
def test_parity_with_torch_lengths(backend, torch, mode_name, config):
    """lengths= matches pack_padded_sequence(enforce_sorted=False) + pad_packed_sequence(total_length=T)."""
    _parity(backend, torch, mode_name, CONFIGS[config], with_hx=config == "2layer_bidir", lengths=LENGTHS)


def test_parity_unbatched(backend, torch):
    m = nnx.LSTM(IN, H, num_layers=2, bidirectional=True, dtype="float64")
    tm = torch.nn.LSTM(IN, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    copy_params_to_torch(m, tm)
    xs = np.random.default_rng(0).standard_normal((T, IN))
    h0, c0 = _states("lstm", {"num_layers": 2, "bidirectional": True}, batch=None)
    out, (hn, cn) = m(nnx.asarray(xs, dtype="float64"), (h0, c0))
    tx = torch.tensor(xs, requires_grad=True)
    tout, (thn, tcn) = tm(tx, (torch.tensor(host(h0)), torch.tensor(host(c0))))
    assert tuple(out.shape) == (T, 2 * H) and tuple(hn.shape) == (4, H)
    assert_close(out, tout, rtol=1e-9, atol=1e-10)
    assert_close(cn, tcn, rtol=1e-9, atol=1e-10)
    (tout.sum() + thn.sum()).backward()
    dx, (dh0, dc0) = m.backward(nnx.asarray(np.ones((T, 2 * H)), dtype="float64"),
                                nnx.asarray(np.ones((4, H)), dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-8, atol=1e-10)
    assert tuple(dh0.shape) == (4, H) and tuple(dc0.shape) == (4, H)


# ----------------------------------------------------------------------------- gradient checks
class Flat(nnx.Module):
    """Flattens a recurrent layer for nnx.gradcheck: forward(x, *state) -> (out, h_n[, c_n])."""

    def __init__(self, rnn: nnx.Module, lengths=None, reseed: int | None = None) -> None:
        super().__init__()
        self.rnn = rnn
        self.lengths = lengths
        self.reseed = reseed
        self.is_lstm = isinstance(rnn, nnx.LSTM)

    def forward(self, x, *state):
        if self.reseed is not None:
            nnx.manual_seed(self.reseed)  # the same dropout mask on every call
        hx = None
        if state:
            hx = (state[0], state[1]) if self.is_lstm else state[0]
        out, st = self.rnn(x, hx, lengths=self.lengths)
        return (out, st[0], st[1]) if self.is_lstm else (out, st)

    def backward(self, dys, input_grad=True):
        grads = self.rnn.backward(*dys)
        if not isinstance(grads, tuple):
            return grads
        dx, dhx = grads
        return (dx, *dhx) if self.is_lstm else (dx, dhx)


GRAD_CONFIGS = {
    "2layer_bidir_hx": ({"num_layers": 2, "bidirectional": True}, True, None),
    "batch_first_lengths_bidir": ({"batch_first": True, "bidirectional": True}, False, [3, 1]),
    "lengths_hx_2layer": ({"num_layers": 2}, True, [2, 3]),
    "no_bias": ({"bias": False}, False, None),
}


@pytest.mark.parametrize("config", list(GRAD_CONFIGS))
@pytest.mark.parametrize("mode_name", list(MODES))
def test_gradcheck(backend, mode_name, config):
    kw, with_hx, lengths = GRAD_CONFIGS[config]
    factory = MODES[mode_name][0]
    m = factory(dtype="float64", **kw)
    steps, batch = 3, 2
    x = rand(batch, steps, IN, seed=3) if kw.get("batch_first") else rand(steps, batch, IN, seed=3)
    if mode_name == "rnn_relu" and kw.get("bias", True):  # keep pre-activations away from the kink of relu
        m.bias_ih_l0.data = m.bias_ih_l0.data + 1.0
    inputs = [x]
    if with_hx:
        st = _states(mode_name, kw, batch=batch)
        inputs += list(st) if isinstance(st, tuple) else [st]
    assert nnx.gradcheck(Flat(m, lengths), *inputs, atol=1e-6, rtol=1e-4)


def test_gradcheck_dropout_between_layers(backend):
    """With the dropout mask fixed by reseeding, the backward of the dropped path is exact."""
    m = nnx.GRU(IN, H, num_layers=2, dropout=0.5, dtype="float64")
    assert nnx.gradcheck(Flat(m, reseed=3), rand(3, 2, IN, seed=1), atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------- lengths semantics
@pytest.mark.parametrize("mode_name", ["lstm", "gru"])
def test_padding_does_not_matter(backend, mode_name):
    """Values past each length change neither outputs, nor final states, nor gradients."""
    m = MODES[mode_name][0](dtype="float64", bidirectional=True)
    xs = np.random.default_rng(0).standard_normal((T, B, IN))
    xs2 = xs.copy()
    for b, n in enumerate(LENGTHS):
        xs2[n:, b] = 1e3 * np.random.default_rng(b).standard_normal((T - n, IN))
    results = []
    for data in (xs, xs2):
        out, st = m(nnx.asarray(data, dtype="float64"), lengths=LENGTHS)
        h = st[0] if mode_name == "lstm" else st
        dx = m.backward(nnx.asarray(np.ones((T, B, 2 * H)), dtype="float64"),
                        nnx.asarray(np.ones((2, B, H)), dtype="float64"))
        grads = [host(p.grad) for p in m.parameters()]
        m.zero_grad()
        results.append((host(out), host(h), host(dx), grads))
    (o1, h1, dx1, g1), (o2, h2, dx2, g2) = results
    np.testing.assert_allclose(o1, o2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h1, h2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for b, n in enumerate(LENGTHS):
        assert np.all(o1[n:, b] == 0.0), "outputs past a sequence's length are zero"
        assert np.all(dx1[n:, b] == 0.0), "padded steps get no gradient"


def test_lengths_final_state_is_last_valid_step(backend):
    """Forward direction: h_n of a short sequence equals the output at its last valid step."""
    m = nnx.LSTM(IN, H, dtype="float64")
    out, (hn, _) = m(rand(T, B, IN), lengths=nnx.asarray(np.array(LENGTHS)))
    o = host(out)
    for b, n in enumerate(LENGTHS):
        np.testing.assert_allclose(host(hn)[0, b], o[n - 1, b], rtol=1e-12)


def test_lengths_full_equals_no_lengths(backend):
    m = nnx.GRU(IN, H, dtype="float64", bidirectional=True)
    x = rand(T, B, IN)
    out1, h1 = m(x)
    out2, h2 = m(x, lengths=[T] * B)     # the layer skips the masks here...
    out3, h3 = nnx.functional.gru(x, None, m._flat_weights, bidirectional=True, lengths=[T] * B)  # ...this masks
    for o, h in ((out2, h2), (out3, h3)):
        np.testing.assert_allclose(host(o), host(out1), rtol=1e-12)
        np.testing.assert_allclose(host(h), host(h1), rtol=1e-12)


# ----------------------------------------------------------------------------- backward signature
def test_backward_none_gradients_and_tuple_form(backend, torch):
    """backward(None, d_h_n) (loss on the final state only) and the output-shaped tuple form agree."""
    m = nnx.LSTM(IN, H, num_layers=2, dtype="float64")
    tm = torch.nn.LSTM(IN, H, num_layers=2, dtype=torch.float64)
    copy_params_to_torch(m, tm)
    xs = np.random.default_rng(0).standard_normal((T, B, IN))
    dh = np.random.default_rng(1).standard_normal((2, B, H))
    tx = torch.tensor(xs, requires_grad=True)
    _, (thn, _) = tm(tx)
    (thn * torch.tensor(dh)).sum().backward()
    m(nnx.asarray(xs, dtype="float64"))
    dx = m.backward(None, nnx.asarray(dh, dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-8, atol=1e-10)
    g1 = host(m.weight_hh_l1.grad)
    m.zero_grad()
    m(nnx.asarray(xs, dtype="float64"))
    dx2 = m.backward((None, (nnx.asarray(dh, dtype="float64"), None)))
    np.testing.assert_allclose(host(dx2), host(dx), rtol=1e-12)
    np.testing.assert_allclose(host(m.weight_hh_l1.grad), g1, rtol=1e-12)
    assert_close(m.weight_hh_l1.grad, dict(tm.named_parameters())["weight_hh_l1"].grad, rtol=1e-8, atol=1e-10)


def test_input_grad_false_and_all_none(backend):
    m = nnx.GRU(IN, H, dtype="float64")
    x = rand(T, B, IN)
    out, _ = m(x)
    assert m.backward(nnx.asarray(np.ones((T, B, H)), dtype="float64"), input_grad=False) is None
    assert m.weight_ih_l0.grad is not None
    m(x)
    with pytest.raises(ValueError, match="GRU.backward: all output gradients are None"):
        m.backward(None, None)


def test_two_calls_accumulate(backend):
    """Called twice before backward (weights shared), two backward calls newest first add up."""
    m = nnx.LSTM(IN, H, dtype="float64")
    xa, xb = rand(T, B, IN, seed=1), rand(T, B, IN, seed=2)
    dy = nnx.asarray(np.ones((T, B, H)), dtype="float64")
    single = []
    for x in (xa, xb):
        m(x)
        m.backward(dy)
        single.append(host(m.weight_hh_l0.grad))
        m.zero_grad()
    m(xa)
    m(xb)
    m.backward(dy)
    m.backward(dy)
    np.testing.assert_allclose(host(m.weight_hh_l0.grad), single[0] + single[1], rtol=1e-12)
    assert len(m._tape) == 0


def test_eval_records_nothing_and_dropout_only_in_training(backend):
    m = nnx.LSTM(IN, H, num_layers=2, dropout=0.5, dtype="float64")
    x = rand(T, B, IN)
    m.eval()
    o1, _ = m(x)
    o2, _ = m(x)
    assert len(m._tape) == 0
    np.testing.assert_array_equal(host(o1), host(o2))
    with pytest.raises(nnx.NotRecordedError):
        m.backward(nnx.asarray(np.ones((T, B, H)), dtype="float64"))
    m.train()
    o3, _ = m(x)
    assert not np.allclose(host(o3), host(o1)), "dropout between layers is active while training"
    with nnx.no_grad():
        m(x)
    assert len(m._tape) == 1


# ----------------------------------------------------------------------------- layout, init, dtype
def test_state_dict_matches_torch(torch):
    for cls, tcls in ((nnx.LSTM, torch.nn.LSTM), (nnx.GRU, torch.nn.GRU), (nnx.RNN, torch.nn.RNN)):
        m = cls(5, 7, num_layers=2, bidirectional=True, bias=True)
        tm = tcls(5, 7, num_layers=2, bidirectional=True)
        sd, tsd = m.state_dict(), tm.state_dict()
        assert list(sd) == list(tsd)
        for k in sd:
            assert tuple(sd[k].shape) == tuple(tsd[k].shape), k
        nnx_sd = {k: v.detach().numpy() for k, v in tsd.items()}
        m.load_state_dict(nnx_sd)  # a PyTorch state_dict (as arrays) loads directly
        np.testing.assert_allclose(host(m.weight_hh_l1_reverse.data), nnx_sd["weight_hh_l1_reverse"], rtol=1e-6)
    assert list(nnx.LSTM(3, 4, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]


def test_defaults_and_init(backend):
    m = nnx.LSTM(10, 25)
    assert (m.num_layers, m.bias, m.batch_first, m.dropout, m.bidirectional) == (1, True, False, 0.0, False)
    bound = 1.0 / math.sqrt(25)
    for _, p in m.named_parameters():
        v = host(p.data)
        assert v.dtype == np.float32
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.8 * bound
        assert abs(v.mean()) < 0.1 * bound * 10
    assert tuple(m.weight_ih_l0.shape) == (100, 10) and tuple(nnx.GRU(10, 25).weight_hh_l0.shape) == (75, 25)
    assert tuple(nnx.RNN(10, 25).bias_hh_l0.shape) == (25,)


@pytest.mark.parametrize("mode_name", list(MODES))
def test_float32_stays_float32(backend, mode_name):
    m = MODES[mode_name][0](num_layers=2, bidirectional=True)
    x = nnx.asarray(np.random.default_rng(0).standard_normal((T, B, IN)))
    out, st = m(x, lengths=LENGTHS)
    states = st if isinstance(st, tuple) else (st,)
    for a in (out, *states):
        assert nnx.backend.Backend.dtype_name(a.dtype) == "float32"
    dx = m.backward(nnx.asarray(np.ones((T, B, 2 * H))))
    assert nnx.backend.Backend.dtype_name(dx.dtype) == "float32"
    for p in m.parameters():
        assert nnx.backend.Backend.dtype_name(p.grad.dtype) == "float32"


def test_buffers_reused_and_nothing_kept(backend):
    """On mutable host-memory libraries the layer's workspace lends the per-step buffers (one shared by
    the input projection, the saved activations and the gate gradients; the previous states h and c),
    all given back by the backward, so the next call reuses them; elsewhere nothing is pooled. The
    tape holds nothing after backward."""
    m = nnx.LSTM(IN, H, dtype="float64")
    x = rand(T, B, IN)
    dy = nnx.asarray(np.ones((T, B, H)), dtype="float64")

    def pooled() -> set:
        return {id(a) for bufs in m._workspace._free.values() for a in bufs}

    m(x)
    if not (backend.mutable and backend.host_memory):
        m.backward(dy)
        assert not pooled(), "no scratch buffer reuse on GPUs and immutable libraries"
        return
    assert len(pooled()) == 0  # everything is lent until the backward
    m.backward(dy)
    assert len(m._tape) == 0
    first = pooled()
    assert len(first) == 3  # the shared (T, B, 5H) buffer, the previous states h and c (T, B, H each)
    m(x)
    m.backward(dy)
    assert pooled() == first, "the second call reuses the pooled buffers"
    m.eval()
    m(x)
    assert pooled() == first, "without a backward to come, nothing is lent"


def test_workspace_is_bounded(backend):
    """Variable sequence lengths do not grow the pool beyond max_shapes distinct shapes."""
    m = nnx.GRU(IN, H, dtype="float64")
    for steps in range(1, 15):
        m(rand(steps, 2, IN))
        m.backward(nnx.asarray(np.ones((steps, 2, H)), dtype="float64"))
    assert len(m._workspace._free) <= m._workspace.max_shapes
    m._workspace.clear()
    assert not m._workspace._free


# ----------------------------------------------------------------------------- LSTM with projections
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_lstm_proj_size_parity(backend, torch, lengths):
    kw = {"num_layers": 2, "bidirectional": True, "proj_size": 2, "batch_first": True}
    m = nnx.LSTM(IN, 3, dtype="float64", **kw)
    tm = torch.nn.LSTM(IN, 3, dtype=torch.float64, **kw)
    assert list(m.state_dict()) == list(tm.state_dict())
    copy_params_to_torch(m, tm)
    rng = np.random.default_rng(0)
    xs, h0, c0 = rng.standard_normal((B, T, IN)), rng.standard_normal((4, B, 2)), rng.standard_normal((4, B, 3))
    tx, th0, tc0 = (torch.tensor(a, requires_grad=True) for a in (xs, h0, c0))
    f64 = "float64"
    out, (hn, cn) = m(nnx.asarray(xs, dtype=f64), (nnx.asarray(h0, dtype=f64), nnx.asarray(c0, dtype=f64)),
                      lengths=lengths)
    tout, (thn, tcn) = _torch_run(torch, tm, tx, (th0, tc0), lengths, True)
    assert tuple(out.shape) == (B, T, 4) and tuple(hn.shape) == (4, B, 2) and tuple(cn.shape) == (4, B, 3)
    for a, e in ((out, tout), (hn, thn), (cn, tcn)):
        assert_close(a, e, rtol=1e-9, atol=1e-10)
    g = [rng.standard_normal(tuple(a.shape)) for a in (out, hn, cn)]
    sum((a * torch.tensor(b)).sum() for a, b in zip((tout, thn, tcn), g, strict=True)).backward()
    dx, (dh0, dc0) = m.backward(*[nnx.asarray(a, dtype=f64) for a in g])
    for a, e in ((dx, tx.grad), (dh0, th0.grad), (dc0, tc0.grad)):
        assert_close(a, e, rtol=1e-8, atol=1e-10)
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=1e-8, atol=1e-10, what=f"grad of {name}")


def test_lstm_proj_size_gradcheck(backend):
    m = nnx.LSTM(IN, 3, proj_size=1, bidirectional=True, dtype="float64")
    h0, c0 = rand(2, 2, 1, seed=5), rand(2, 2, 3, seed=6)
    assert nnx.gradcheck(Flat(m, lengths=[3, 2]), rand(3, 2, IN, seed=4), h0, c0, atol=1e-6, rtol=1e-4)
