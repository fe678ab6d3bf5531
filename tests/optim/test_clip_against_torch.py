"""clip_grad_norm_ and clip_grad_value_ against torch.nn.utils: gradients under the limit are left
alone (never scaled up), negative gradients are clipped at -value, the total norm is returned."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close


def _params(torch, scale: float):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s) * scale for s in ((3, 4), (5,))]
    params = [nnx.Parameter(nnx.asarray(np.zeros(g.shape), dtype="float64")) for g in grads]
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, tp, g in zip(params, tparams, grads):
        p.grad = nnx.asarray(g, dtype="float64")
        tp.grad = torch.tensor(g)
    return params, tparams


@pytest.mark.parametrize("max_norm,norm_type", [(0.5, 2.0), (100.0, 2.0), (0.5, float("inf")), (100.0, 1.0)])
def test_clip_grad_norm_matches_torch(backend, torch, max_norm, norm_type):
    params, tparams = _params(torch, 1.0)
    total = nnx.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    assert_close(total, ttotal, rtol=1e-12, atol=1e-12, what="total norm")
    for p, tp in zip(params, tparams):
        assert_close(p.grad, tp.grad, rtol=1e-12, atol=1e-12, what="clipped gradient")


@pytest.mark.parametrize("value", [0.3, 10.0])
def test_clip_grad_value_matches_torch(backend, torch, value):
    params, tparams = _params(torch, 2.0)
    nnx.clip_grad_value_(params, value)
    torch.nn.utils.clip_grad_value_(tparams, value)
    for p, tp in zip(params, tparams):
        assert_close(p.grad, tp.grad, rtol=0, atol=0, what="clipped gradient")
