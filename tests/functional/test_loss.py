"""Losses: gradient checks and PyTorch parity of value and input gradient over each configuration grid,
on every backend."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import assert_close, host, rand

REDUCTIONS = ["mean", "sum", "none"]
N, C = 5, 4


def _t(torch, x, grad=False):
    return torch.tensor(host(x), requires_grad=grad)


def _check_parity(torch, loss_fn, inputs, targets_or_none, torch_loss, grad_seed=7, rtol=1e-10, atol=1e-12):
    """nnx loss value and d loss / d input equal torch's, for an upstream gradient of the loss's shape."""
    x, t = inputs, targets_or_none
    loss = loss_fn(x, t)
    tx = _t(torch, x, grad=True)
    tloss = torch_loss(tx, _t(torch, t))
    assert tuple(loss.shape) == tuple(tloss.shape), f"loss shape {tuple(loss.shape)} != torch {tuple(tloss.shape)}"
    assert_close(loss, tloss, rtol=rtol, atol=atol, what="loss value")
    if loss.ndim == 0:
        g = nnx.asarray(np.asarray(1.7), dtype="float64")
    else:
        g = rand(*loss.shape, seed=grad_seed)
    dx = loss_fn.backward(g)
    tloss.backward(_t(torch, g))
    assert tuple(dx.shape) == tuple(x.shape)
    assert_close(dx, tx.grad, rtol=rtol, atol=atol, what="input gradient")


# ----------------------------------------------------------------------------- regression losses
REGRESSION = [
    ("mse", lambda r: nnx.MSELoss(reduction=r), lambda tf, r: (lambda a, b: tf.mse_loss(a, b, reduction=r))),
    ("l1", lambda r: nnx.L1Loss(reduction=r), lambda tf, r: (lambda a, b: tf.l1_loss(a, b, reduction=r))),
    *[(f"huber_delta{d}", (lambda r, d=d: nnx.HuberLoss(reduction=r, delta=d)),
       (lambda tf, r, d=d: (lambda a, b: tf.huber_loss(a, b, reduction=r, delta=d)))) for d in (0.5, 1.0, 2.0)],
    *[(f"smooth_l1_beta{b_}", (lambda r, b_=b_: nnx.SmoothL1Loss(reduction=r, beta=b_)),
       (lambda tf, r, b_=b_: (lambda a, b: tf.smooth_l1_loss(a, b, reduction=r, beta=b_)))) for b_ in (0.0, 0.5, 1.0)],
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", REGRESSION, ids=[c[0] for c in REGRESSION])
def test_regression_loss_parity_and_gradcheck(backend, torch, case, reduction):
    _, make, tmake = case
    x, t = rand(N, 3, seed=1, scale=1.5), rand(N, 3, seed=2)
    _check_parity(torch, make(reduction), x, t, tmake(torch.nn.functional, reduction))
    assert nnx.gradcheck(make(reduction), x, t, check_inputs=[True, False])


@pytest.mark.parametrize("case", REGRESSION, ids=[c[0] for c in REGRESSION])
def test_regression_loss_float32_and_functional(backend, case):
    _, make, _ = case
    x, t = rand(N, 3, seed=1, dtype="float32"), rand(N, 3, seed=2, dtype="float32")
    fn = make("mean")
    loss = fn(x, t)
    assert loss.dtype == x.dtype and loss.ndim == 0
    assert fn.backward().dtype == x.dtype


def test_functional_regression_forms_match_modules(backend):
    x, t = rand(N, 3, seed=1), rand(N, 3, seed=2)
    pairs = [(F.mse_loss(x, t), nnx.MSELoss()(x, t)), (F.l1_loss(x, t), nnx.L1Loss()(x, t)),
             (F.huber_loss(x, t, delta=0.7), nnx.HuberLoss(delta=0.7)(x, t)),
             (F.smooth_l1_loss(x, t, beta=0.7), nnx.SmoothL1Loss(beta=0.7)(x, t))]
    for a, b in pairs:
        assert float(a) == float(b)
    # known value
    assert float(F.mse_loss(nnx.asarray([1.0, 3.0]), nnx.asarray([0.0, 0.0]))) == 5.0


def test_loss_backward_default_grad_and_single_use(backend):
    fn = nnx.MSELoss()
    x, t = rand(3, 2, seed=1), rand(3, 2, seed=2)
    fn(x, t)
    g = host(fn.backward())
    np.testing.assert_allclose(g, 2.0 * (host(x) - host(t)) / 6.0, rtol=1e-14)
    with pytest.raises(nnx.NotRecordedError, match="MSELoss.backward: no recorded call"):
        fn.backward()
    with nnx.no_grad():
        fn(x, t)
    with pytest.raises(nnx.NotRecordedError, match="no_grad"):
        fn.backward()
    fn(x, t)
    with pytest.raises(ValueError, match=r"MSELoss.backward: grad_output has shape \(3,\) but the loss has shape \(\)"):
        fn.backward(rand(3))


# ----------------------------------------------------------------------------- cross-entropy, class indices
def _targets(shape, ignore=None, seed=3):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, C, size=shape)
    if ignore is not None:
        t.flat[::3] = ignore
    return nnx.asarray(t)


CE_GRID = list(itertools.product([False, True], [None, -100, 1], [0.0, 0.2], REDUCTIONS))


def _ce_id(c):
    w, ig, ls, r = c
    return f"w{int(w)}-ig{ig}-ls{ls}-{r}"


@pytest.mark.parametrize("kdim", [False, True], ids=["2d", "kdim"])
@pytest.mark.parametrize("config", CE_GRID, ids=[_ce_id(c) for c in CE_GRID])
def test_cross_entropy_class_indices(backend, torch, config, kdim):
    use_w, ignore, smoothing, reduction = config
    shape = (3, C, 2, 2) if kdim else (N, C)
    tshape = (3, 2, 2) if kdim else (N,)
    x = rand(*shape, seed=1, scale=2.0)
    t = _targets(tshape, ignore)
    w = nnx.asarray(np.array([0.5, 2.0, 1.0, 1.5]), dtype="float64") if use_w else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    if ignore is not None:
        kw["ignore_index"] = ignore
    fn = nnx.CrossEntropyLoss(weight=w, **kw)
    tw = _t(torch, w) if use_w else None
    _check_parity(torch, fn, x, t,
                  lambda a, b: torch.nn.functional.cross_entropy(a, b, weight=tw, **kw))
    assert nnx.gradcheck(nnx.CrossEntropyLoss(weight=w, **kw), x, t)


PROB_GRID = list(itertools.product([False, True], [0.0, 0.2], REDUCTIONS))


@pytest.mark.parametrize("kdim", [False, True], ids=["2d", "kdim"])
@pytest.mark.parametrize("config", PROB_GRID, ids=[f"w{int(w)}-ls{ls}-{r}" for w, ls, r in PROB_GRID])
def test_cross_entropy_probability_targets(backend, torch, config, kdim):
    use_w, smoothing, reduction = config
    shape = (2, C, 3) if kdim else (N, C)
    x = rand(*shape, seed=1, scale=2.0)
    raw = np.random.default_rng(4).random(shape)
    t = nnx.asarray(raw / raw.sum(axis=1, keepdims=True), dtype="float64")
    w = nnx.asarray(np.array([0.5, 2.0, 1.0, 1.5]), dtype="float64") if use_w else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    fn = nnx.CrossEntropyLoss(weight=w, **kw)
    tw = _t(torch, w) if use_w else None
    _check_parity(torch, fn, x, t, lambda a, b: torch.nn.functional.cross_entropy(a, b, weight=tw, **kw))
    assert nnx.gradcheck(nnx.CrossEntropyLoss(weight=w, **kw), x, t, check_inputs=[True, False])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_unbatched(backend, torch, reduction):
    x = rand(C, seed=1)
    t = nnx.asarray(np.asarray(2))
    _check_parity(torch, nnx.CrossEntropyLoss(reduction=reduction), x, t,
                  lambda a, b: torch.nn.functional.cross_entropy(a, b, reduction=reduction))


def test_cross_entropy_stable_at_huge_logits(backend, torch):
    x = nnx.asarray(np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, 1e4, 1e4]]), dtype="float64")
    t = nnx.asarray(np.array([1, 0]))
    _check_parity(torch, nnx.CrossEntropyLoss(), x, t, lambda a, b: torch.nn.functional.cross_entropy(a, b))
    x32 = nnx.asarray(np.array([[1e4, -1e4, 0.0, 5e3]]), dtype="float32")
    loss = nnx.CrossEntropyLoss()(x32, nnx.asarray(np.array([0])))
    assert loss.dtype == x32.dtype and float(loss) == 0.0


def test_cross_entropy_float32(backend):
    x = rand(N, C, dtype="float32")
    fn = nnx.CrossEntropyLoss(label_smoothing=0.1)
    loss = fn(x, _targets((N,)))
    assert loss.dtype == x.dtype and fn.backward().dtype == x.dtype


# ----------------------------------------------------------------------------- NLL
NLL_GRID = list(itertools.product([False, True], [None, 2], REDUCTIONS))


@pytest.mark.parametrize("kdim", [False, True], ids=["2d", "kdim"])
@pytest.mark.parametrize("config", NLL_GRID, ids=[f"w{int(w)}-ig{ig}-{r}" for w, ig, r in NLL_GRID])
def test_nll_loss(backend, torch, config, kdim):
    use_w, ignore, reduction = config
    shape = (3, C, 2) if kdim else (N, C)
    x = F.log_softmax(rand(*shape, seed=1), dim=1)
    t = _targets((3, 2) if kdim else (N,), ignore)
    w = nnx.asarray(np.array([0.5, 2.0, 1.0, 1.5]), dtype="float64") if use_w else None
    kw = dict(reduction=reduction)
    if ignore is not None:
        kw["ignore_index"] = ignore
    tw = _t(torch, w) if use_w else None
    _check_parity(torch, nnx.NLLLoss(weight=w, **kw), x, t,
                  lambda a, b: torch.nn.functional.nll_loss(a, b, weight=tw, **kw))
    assert nnx.gradcheck(nnx.NLLLoss(weight=w, **kw), x, t)


def test_log_softmax_then_nll_equals_cross_entropy(backend):
    x, t = rand(N, C, seed=1), _targets((N,))
    ce = float(nnx.CrossEntropyLoss()(x, t))
    nll = float(nnx.NLLLoss()(nnx.LogSoftmax(dim=1)(x), t))
    assert abs(ce - nll) < 1e-14


# ----------------------------------------------------------------------------- BCE
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_w", [False, True])
def test_bce_loss(backend, torch, use_w, reduction):
    x = F.sigmoid(rand(N, 3, seed=1))
    t = nnx.asarray(np.random.default_rng(2).random((N, 3)), dtype="float64")  # soft targets are allowed
    w = rand(N, 3, seed=5) if use_w else None
    tw = _t(torch, w) if use_w else None
    _check_parity(torch, nnx.BCELoss(weight=w, reduction=reduction), x, t,
                  lambda a, b: torch.nn.functional.binary_cross_entropy(a, b, weight=tw, reduction=reduction))
    assert nnx.gradcheck(nnx.BCELoss(weight=w, reduction=reduction), x, t, check_inputs=[True, False])


def test_bce_loss_clamps_log_like_torch(backend, torch):
    x = nnx.asarray(np.array([0.0, 1.0, 0.5, 1e-50]), dtype="float64")
    t = nnx.asarray(np.array([1.0, 0.0, 1.0, 1.0]), dtype="float64")
    loss = nnx.BCELoss(reduction="none")(x, t)
    tl = torch.nn.functional.binary_cross_entropy(_t(torch, x), _t(torch, t), reduction="none")
    assert_close(loss, tl, what="clamped BCE")
    np.testing.assert_allclose(host(loss)[:2], 100.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_w,use_pw", [(False, False), (True, False), (False, True), (True, True)])
def test_bce_with_logits(backend, torch, use_w, use_pw, reduction):
    x = rand(N, 3, seed=1, scale=3.0)
    t = nnx.asarray(np.random.default_rng(2).random((N, 3)), dtype="float64")
    w = rand(N, 3, seed=5) if use_w else None
    pw = nnx.asarray(np.array([0.5, 3.0, 1.2]), dtype="float64") if use_pw else None
    tw = _t(torch, w) if use_w else None
    tpw = _t(torch, pw) if use_pw else None
    kw = dict(weight=w, reduction=reduction, pos_weight=pw)
    _check_parity(torch, nnx.BCEWithLogitsLoss(**kw), x, t,
                  lambda a, b: torch.nn.functional.binary_cross_entropy_with_logits(
                      a, b, weight=tw, reduction=reduction, pos_weight=tpw))
    assert nnx.gradcheck(nnx.BCEWithLogitsLoss(**kw), x, t, check_inputs=[True, False])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("use_pw", [False, True])
def test_bce_with_logits_stable_at_extremes(backend, torch, use_pw, dtype):
    x = nnx.asarray(np.array([[-1000.0, 1000.0, -1000.0, 1000.0, 0.0, 80.0]]), dtype=dtype)
    t = nnx.asarray(np.array([[0.0, 1.0, 1.0, 0.0, 1.0, 0.5]]), dtype=dtype)
    pw = nnx.asarray(np.array([2.0] * 6), dtype=dtype) if use_pw else None
    fn = nnx.BCEWithLogitsLoss(reduction="none", pos_weight=pw)
    loss = fn(x, t)
    dx = fn.backward(nnx.asarray(np.ones((1, 6)), dtype=dtype))
    tdt = getattr(torch, dtype)
    tx = torch.tensor(host(x), dtype=tdt, requires_grad=True)
    tl = torch.nn.functional.binary_cross_entropy_with_logits(
        tx, torch.tensor(host(t), dtype=tdt), reduction="none",
        pos_weight=torch.tensor(host(pw), dtype=tdt) if use_pw else None)
    tl.backward(torch.ones_like(tl))
    assert np.all(np.isfinite(host(loss))) and np.all(np.isfinite(host(dx)))
    assert loss.dtype == x.dtype and dx.dtype == x.dtype
    np.testing.assert_allclose(host(loss), tl.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(host(dx), tx.grad.numpy(), rtol=1e-6, atol=1e-30)


def test_loss_repr_and_bad_reduction():
    assert repr(nnx.MSELoss()) == "MSELoss()"
    assert repr(nnx.L1Loss(reduction="sum")) == "L1Loss(reduction='sum')"
    with pytest.raises(ValueError, match="MSELoss: reduction must be one of .* got 'avg'"):
        nnx.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        nnx.CrossEntropyLoss(label_smoothing=1.5)


def test_loss_weight_buffers_state_dict_like_torch(backend, torch):
    w = nnx.asarray(np.array([0.5, 2.0, 1.0]), dtype="float64")
    tw = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    pairs = [(nnx.CrossEntropyLoss(weight=w), torch.nn.CrossEntropyLoss(weight=tw)),
             (nnx.NLLLoss(), torch.nn.NLLLoss()),
             (nnx.BCEWithLogitsLoss(pos_weight=w), torch.nn.BCEWithLogitsLoss(pos_weight=tw)),
             (nnx.BCELoss(weight=w), torch.nn.BCELoss(weight=tw))]
    for ours, theirs in pairs:
        assert list(ours.state_dict()) == list(theirs.state_dict()), type(ours).__name__
    loss = nnx.CrossEntropyLoss(weight=w).to(dtype="float32")
    assert str(loss.weight.dtype).endswith("float32")


@pytest.mark.parametrize("config", [dict(), dict(weight=True), dict(ignore_index=1), dict(label_smoothing=0.0,
                                    reduction="none"), dict(ignore_index=1, label_smoothing=0.1, reduction="sum")],
                         ids=["plain", "weight", "ignore", "none", "ignore_smoothing"])
def test_cross_entropy_and_nll_with_masked_logits(backend, torch, config):
    """-inf logits for classes that are not the target (action or vocabulary masks) give torch's finite loss,
    not 0 * -inf = NaN (and no RuntimeWarning). Ignored rows may hold -inf anywhere."""
    kw = dict(config)
    use_w = kw.pop("weight", False)
    raw = np.array([[1.0, -np.inf, 0.5, 0.0], [0.2, 0.1, -np.inf, 0.3], [-np.inf, 0.7, -np.inf, 0.1]])
    target = np.array([0, 1, 1])
    if kw.get("label_smoothing"):  # with smoothing every class counts: only the ignored row keeps its -inf
        raw[:2] = np.nan_to_num(raw[:2], neginf=-30.0)
    x = nnx.asarray(raw, dtype="float64")
    t = nnx.asarray(target)
    w = nnx.asarray(np.array([0.5, 2.0, 1.0, 1.5]), dtype="float64") if use_w else None
    tw = _t(torch, w) if use_w else None
    _check_parity(torch, nnx.CrossEntropyLoss(weight=w, **kw), x, t,
                  lambda a, b: torch.nn.functional.cross_entropy(a, b, weight=tw, **kw))
    if not kw.get("label_smoothing"):
        logp = F.log_softmax(x, dim=1)
        nll_kw = {k: v for k, v in kw.items() if k != "label_smoothing"}
        _check_parity(torch, nnx.NLLLoss(weight=w, **nll_kw), logp, t,
                      lambda a, b: torch.nn.functional.nll_loss(a, b, weight=tw, **nll_kw))


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.25])
def test_bce_refuses_probabilities_outside_0_1(backend, bad):
    p = np.array([[0.2, 0.7], [0.4, bad]])
    t = np.array([[0.0, 1.0], [1.0, 0.0]])
    loss_fn = nnx.BCELoss()
    if backend.host_memory:
        with pytest.raises(ValueError, match=r"binary_cross_entropy: all elements of input must be probabilities "
                                             r"in \[0, 1\] \(NaN is not\)"):
            loss_fn(nnx.asarray(p), nnx.asarray(t))
    else:  # devices do not synchronise to check: the loss is NaN, which fit() reports as NonFiniteError
        assert np.isnan(float(host(loss_fn(nnx.asarray(p), nnx.asarray(t)))))


def test_cross_entropy_weight_of_the_wrong_length_is_refused(backend):
    logits = nnx.asarray(np.zeros((4, 3)))
    target = nnx.asarray(np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"cross_entropy: weight must have one entry per class, shape \(3,\), "
                                         r"got \(2,\)"):
        nnx.CrossEntropyLoss(weight=nnx.asarray(np.ones(2)))(logits, target)
