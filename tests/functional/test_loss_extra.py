"""KLDiv, PoissonNLL, GaussianNLL, MarginRanking, CosineEmbedding, TripletMargin losses: value and every
input gradient against torch, numerical gradcheck (float64), on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, host, rand

REDUCTIONS = ["mean", "sum", "none"]


def _t(torch, x, grad=False):
    return torch.tensor(host(x), requires_grad=grad)


def _upstream(loss):
    return nnx.asarray(np.asarray(1.7), dtype="float64") if loss.ndim == 0 else rand(*loss.shape, seed=7)


def _parity(torch, loss_fn, inputs, tfn, diff):
    """Value and gradients of the inputs flagged in ``diff`` equal torch's."""
    loss = loss_fn(*inputs)
    tin = [_t(torch, x, grad=d) for x, d in zip(inputs, diff)]
    tloss = tfn(*tin)
    assert tuple(loss.shape) == tuple(tloss.shape)
    assert_close(loss, tloss, rtol=1e-10, atol=1e-12, what="loss value")
    g = _upstream(loss)
    grads = loss_fn.backward(g)
    tloss.backward(_t(torch, g))
    grads = grads if isinstance(grads, tuple) else (grads,)
    flagged = [tx for tx, d in zip(tin, diff) if d]
    assert len(grads) == len(flagged)
    for i, (gr, tx) in enumerate(zip(grads, flagged)):
        assert_close(gr, tx.grad, rtol=1e-9, atol=1e-12, what=f"gradient {i}")


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
def test_kl_div(backend, torch, reduction, log_target):
    x = nnx.functional.log_softmax(rand(4, 5, seed=1), dim=-1) if hasattr(nnx.functional, "log_softmax") \
        else rand(4, 5, seed=1)
    tp = np.abs(host(rand(4, 5, seed=2)))
    tp[0, 1] = 0.0  # a zero target contributes 0 (xlogy)
    t = nnx.asarray(np.log(tp + 1e-3) if log_target else tp, dtype="float64")
    fn = nnx.KLDivLoss(reduction=reduction, log_target=log_target)
    _parity(torch, fn, (x, t), lambda a, b: torch.nn.functional.kl_div(a, b, reduction=reduction,
                                                                       log_target=log_target), [True, False])
    assert nnx.gradcheck(nnx.KLDivLoss(reduction=reduction, log_target=log_target), x, t, check_inputs=[True, False])


@pytest.mark.parametrize("kw", [dict(), dict(full=True), dict(log_input=False), dict(log_input=False, full=True)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_poisson_nll(backend, torch, kw, reduction):
    x = rand(4, 3, seed=1)
    if not kw.get("log_input", True):
        x = nnx.asarray(np.abs(host(x)) + 0.1, dtype="float64")
    t = nnx.asarray(np.array([[0.0, 1.0, 2.0], [3.0, 0.5, 4.0], [1.0, 1.0, 7.0], [2.0, 0.0, 1.5]]), dtype="float64")
    _parity(torch, nnx.PoissonNLLLoss(reduction=reduction, **kw), (x, t),
            lambda a, b: torch.nn.functional.poisson_nll_loss(a, b, reduction=reduction, **kw), [True, False])
    assert nnx.gradcheck(nnx.PoissonNLLLoss(reduction=reduction, **kw), x, t, check_inputs=[True, False])


@pytest.mark.parametrize("var_shape", [(4, 3), (4, 1), (4,)])
@pytest.mark.parametrize("kw", [dict(), dict(full=True, eps=0.05)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_nll(backend, torch, var_shape, kw, reduction):
    x, t = rand(4, 3, seed=1), rand(4, 3, seed=2)
    var = nnx.asarray(np.abs(host(rand(*var_shape, seed=3))) + 0.1, dtype="float64")
    fn = nnx.GaussianNLLLoss(reduction=reduction, **kw)
    _parity(torch, fn, (x, t, var),
            lambda a, b, v: torch.nn.functional.gaussian_nll_loss(a, b, v, reduction=reduction, **kw),
            [True, True, True])
    assert nnx.gradcheck(nnx.GaussianNLLLoss(reduction=reduction, **kw), x, t, var)


def test_gaussian_nll_bad_var_shape(backend):
    with pytest.raises(ValueError, match="gaussian_nll_loss: var must have"):
        nnx.GaussianNLLLoss()(rand(4, 3), rand(4, 3), rand(3, 4))


@pytest.mark.parametrize("margin", [0.0, 0.5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_ranking(backend, torch, margin, reduction):
    a, b = rand(6, seed=1), rand(6, seed=2)
    y = nnx.asarray(np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0]), dtype="float64")
    fn = nnx.MarginRankingLoss(margin=margin, reduction=reduction)
    _parity(torch, fn, (a, b, y), lambda p, q, r: torch.nn.functional.margin_ranking_loss(
        p, q, r, margin=margin, reduction=reduction), [True, True, False])
    assert nnx.gradcheck(nnx.MarginRankingLoss(margin=margin, reduction=reduction), a, b, y,
                         check_inputs=[True, True, False])


@pytest.mark.parametrize("margin", [0.0, -0.3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cosine_embedding(backend, torch, margin, reduction):
    a, b = rand(6, 4, seed=1), rand(6, 4, seed=2)
    y = nnx.asarray(np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0]), dtype="float64")
    fn = nnx.CosineEmbeddingLoss(margin=margin, reduction=reduction)
    _parity(torch, fn, (a, b, y), lambda p, q, r: torch.nn.functional.cosine_embedding_loss(
        p, q, r, margin=margin, reduction=reduction), [True, True, False])
    assert nnx.gradcheck(nnx.CosineEmbeddingLoss(margin=margin, reduction=reduction), a, b, y,
                         check_inputs=[True, True, False])


@pytest.mark.parametrize("kw", [dict(), dict(margin=0.5, p=1.0), dict(p=3.0, swap=True), dict(swap=True, margin=2.0)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_triplet_margin(backend, torch, kw, reduction):
    a, p, n = rand(5, 4, seed=1), rand(5, 4, seed=2), rand(5, 4, seed=3)
    fn = nnx.TripletMarginLoss(reduction=reduction, **kw)
    _parity(torch, fn, (a, p, n), lambda x, y, z: torch.nn.functional.triplet_margin_loss(
        x, y, z, reduction=reduction, **kw), [True, True, True])
    assert nnx.gradcheck(nnx.TripletMarginLoss(reduction=reduction, **kw), a, p, n)


def test_errors(backend):
    with pytest.raises(ValueError, match="KLDivLoss: reduction"):
        nnx.KLDivLoss(reduction="avg")
    with pytest.raises(ValueError, match="margin_ranking_loss: inputs must have the same shape"):
        nnx.MarginRankingLoss()(rand(3), rand(4), rand(3))
    with pytest.raises(ValueError, match="cosine_embedding_loss: expected"):
        nnx.CosineEmbeddingLoss()(rand(3, 2), rand(3, 2), rand(2))
