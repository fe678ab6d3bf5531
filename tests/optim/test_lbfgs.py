"""LBFGS: steps against torch.optim.LBFGS (without and with the strong-Wolfe line search, float64),
and its closure and parameter-group requirements, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import host, optim_model, optim_model_pair, rand


@pytest.mark.parametrize("line_search_fn,lr", [(None, 0.5), ("strong_wolfe", 3.0), ("strong_wolfe", 10.0)])
def test_lbfgs_matches_torch(backend, torch, line_search_fn, lr):
    """lr=3 and 10 overshoot, so the line search brackets and interpolates (11 and 14 cubic steps in torch)."""
    model, tmodel = optim_model_pair(torch)
    x, y = rand(6, 3, seed=1), rand(6, 2, seed=2)
    tx, ty = torch.tensor(host(x)), torch.tensor(host(y))
    kw = dict(lr=lr, max_iter=8, history_size=4, line_search_fn=line_search_fn)
    opt = nnx.optim.LBFGS(model.parameters(), **kw)
    topt = torch.optim.LBFGS(tmodel.parameters(), **kw)
    loss_fn = nnx.MSELoss()

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        return loss

    def tclosure():
        topt.zero_grad()
        loss = torch.nn.functional.mse_loss(tmodel(tx), ty)
        loss.backward()
        return loss

    for step in range(3):
        loss = opt.step(closure)
        tloss = topt.step(tclosure)
        assert float(host(loss)) == pytest.approx(tloss.item(), rel=1e-10)
        for (n, p), tp in zip(model.named_parameters(), tmodel.parameters()):
            np.testing.assert_allclose(host(p.data), tp.detach().numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"LBFGS {n} after step {step}")
    first, tfirst = next(iter(model.parameters())), next(iter(tmodel.parameters()))
    for key in ("func_evals", "n_iter"):
        assert opt.state[first][key] == topt.state[tfirst][key], key


def test_lbfgs_needs_closure_and_one_group():
    model = optim_model()
    with pytest.raises(TypeError, match="LBFGS.step: needs a closure"):
        nnx.optim.LBFGS(model.parameters()).step()
    ps = list(model.parameters())
    with pytest.raises(ValueError, match="parameter groups"):
        nnx.optim.LBFGS([{"params": ps[:2]}, {"params": ps[2:]}])
