"""A child in eval() inside a model in training mode (a frozen BatchNorm, a disabled Dropout) runs its
eval formula and is still differentiated, as in PyTorch; a model in eval() or under no_grad records
nothing."""

from __future__ import annotations

import numpy as np

import nnx

from helpers import assert_close, copy_params_to_torch, host


def _pair(torch):
    model = nnx.Sequential(nnx.Conv2d(2, 3, 3, padding=1), nnx.BatchNorm2d(3), nnx.ReLU(), nnx.Flatten(),
                           nnx.Dropout(0.5), nnx.Linear(3 * 4 * 4, 2)).double()
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(3 * 4 * 4, 2)).double()
    copy_params_to_torch(model, tmodel)
    with torch.no_grad():
        tmodel[1].running_mean.uniform_(-0.5, 0.5)
        tmodel[1].running_var.uniform_(0.5, 2.0)
    model[1].running_mean = nnx.asarray(tmodel[1].running_mean.numpy(), dtype="float64")
    model[1].running_var = nnx.asarray(tmodel[1].running_var.numpy(), dtype="float64")
    return model, tmodel


def test_frozen_batchnorm_and_dropout_in_a_training_model_match_torch(backend, torch):
    model, tmodel = _pair(torch)
    model.train()
    tmodel.train()
    for m, tm in ((model[1], tmodel[1]), (model[4], tmodel[4])):
        m.eval()
        tm.eval()
    mean_before = host(model[1].running_mean).copy()
    x = np.random.default_rng(0).standard_normal((4, 2, 4, 4))
    tx = torch.tensor(x, requires_grad=True)
    ty = tmodel(tx)
    y = model(nnx.asarray(x, dtype="float64"))
    assert_close(y, ty.detach(), rtol=1e-12, atol=1e-12, what="output")
    dy = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    dx = model.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-10, atol=1e-12, what="input gradient")
    tparams = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=1e-10, atol=1e-12, what=name)
    np.testing.assert_array_equal(host(model[1].running_mean), mean_before)  # frozen statistics


def test_eval_model_and_no_grad_record_nothing(backend, torch):
    model, _ = _pair(torch)
    x = nnx.asarray(np.ones((2, 2, 4, 4)), dtype="float64")
    model.eval()
    model(x)
    assert all(not m._tape for m in model.modules())
    model.train()
    with nnx.no_grad():
        model(x)
    assert all(not m._tape for m in model.modules())
