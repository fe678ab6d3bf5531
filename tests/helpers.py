"""Small utilities shared by the tests (host conversion, random data, torch parity)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np

import nnx


def host(x: Any) -> np.ndarray:
    """Host copy of an nnx array (any backend) or pass-through for NumPy."""
    return np.asarray(nnx.to_numpy(x))


def rand(*shape: int, seed: int = 0, dtype: str = "float64", scale: float = 1.0) -> Any:
    """Standard-normal data on the current backend (host RNG: identical on every backend)."""
    data = np.random.default_rng(seed).standard_normal(shape) * scale
    return nnx.asarray(data, dtype=dtype)


def assert_close(actual: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-8, what: str = "") -> None:
    a = host(actual) if not isinstance(actual, np.ndarray) else actual
    e = expected.detach().cpu().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


def copy_params_to_torch(module: nnx.Module, tmodule: Any) -> None:
    """Load the nnx module's parameters into a torch module (same state_dict keys)."""
    import torch

    sd = {k: torch.from_numpy(host(v).copy()) for k, v in module.state_dict().items()}
    tmodule.load_state_dict(sd, strict=True)


def require_backend(*names: str) -> None:
    """Skip the calling test, with the registry's reason, unless every named backend works here."""
    import pytest

    status = nnx.available_backends()
    for name in names:
        if status.get(name) is not True:
            pytest.skip(f"needs backend {name!r}: {status.get(name)}")


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name: str) -> Any:
    """Import ``examples/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layer_parity(torch: Any, layer: nnx.Module, tlayer: Any, x: Any, *, forward_kwargs: dict | None = None,
                 tol: float = 1e-10) -> Any:
    """Compare output, input gradient and parameter gradients of ``layer`` with torch's."""
    forward_kwargs = forward_kwargs or {}
    copy_params_to_torch(layer, tlayer)
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tlayer(tx, **forward_kwargs)
    y = layer(x, **forward_kwargs)
    assert_close(y, ty, rtol=tol, atol=tol, what="output")
    _backward_parity(torch, layer, tlayer, tx, ty, 1, tol)
    assert host(y).dtype == np.float64
    return y


def _backward_parity(torch: Any, layer: nnx.Module, tlayer: Any, tx: Any, ty: Any, seed: int, tol: float) -> dict:
    """Backpropagate the same random output gradient through both; compare the input gradient and
    every parameter gradient. Returns torch's parameters by name."""
    dy = np.random.default_rng(seed).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy))
    dx = layer.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dx, tx.grad, rtol=tol, atol=tol, what="input gradient")
    tparams = dict(tlayer.named_parameters())
    for name, p in layer.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=tol, atol=tol, what=f"gradient of {name}")
    return tparams


def step_parity(torch: Any, layer: nnx.Module, tlayer: Any, x: Any, seed: int = 1, tol: float = 1e-10) -> None:
    """One forward (and, in training mode, backward) of ``layer`` and ``tlayer`` on the same data,
    for layers with state across steps (running statistics): output, input gradient and parameter
    gradients compared; the gradients are then cleared on both sides for the next step."""
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tlayer(tx)
    y = layer(x)
    assert_close(y, ty, rtol=tol, atol=tol, what="output")
    if not layer.training:  # eval mode records nothing (as no_grad)
        return
    tparams = _backward_parity(torch, layer, tlayer, tx, ty, seed, tol)
    for name, p in layer.named_parameters():
        p.grad = None
        tparams[name].grad = None


def randomise(model: nnx.Module, seed: int = 0) -> nnx.Module:
    """Random values in every floating parameter and buffer (running variances positive); eval mode.

    For export and inference checks, where default initialisations (zero biases, unit statistics)
    would hide a wrongly wired parameter."""
    rng = np.random.default_rng(seed)
    sd = {}
    for k, v in model.state_dict().items():
        h = nnx.to_numpy(v)
        if h.dtype.kind == "f":
            h = rng.uniform(0.5, 1.5, h.shape) if k.endswith("running_var") else rng.normal(0, 0.5, h.shape)
        sd[k] = h
    model.load_state_dict(sd)
    return model.eval()


# ------------------------------------------------------------------ optimizer tests (tests/optim)
def optim_config_id(config: tuple[str, dict]) -> str:
    """Test id of an ``(optimizer name, keyword arguments)`` case: ``"Adam-lr=0.01-amsgrad=True"``."""
    name, kw = config
    return name + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


def optim_model() -> nnx.Module:
    """The small float64 MLP (3 -> 4 -> tanh -> 2) the optimizer trajectories are run on."""
    return nnx.Sequential(nnx.Linear(3, 4, dtype="float64"), nnx.Tanh(), nnx.Linear(4, 2, dtype="float64"))


def optim_model_pair(torch: Any) -> tuple[nnx.Module, Any]:
    """:func:`optim_model` and the same network in torch (float64) with identical weights."""
    model = optim_model()
    tmodel = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    copy_params_to_torch(model, tmodel)
    return model, tmodel


def optim_grads(model: nnx.Module, step: int) -> Any:
    """Fill the model's gradients with those of an MSE loss on batch ``step`` (fixed data); returns the loss."""
    loss_fn = nnx.MSELoss()
    loss = loss_fn(model(rand(6, 3, seed=100 + step)), rand(6, 2, seed=200 + step))
    model.backward(loss_fn.backward())
    return loss


# ------------------------------------------------------------------ training tests (tests/training)
def blobs(n: int = 96, d: int = 6, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian blobs: a small real classification problem."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)) * 3.0
    y = np.arange(n) % classes
    X = centers[y] + rng.standard_normal((n, d))
    return X, y


def small_mlp(d: int = 6, classes: int = 3, dropout: float = 0.0) -> nnx.Module:
    """Linear(d, 16) -> ReLU [-> Dropout] -> Linear(16, classes), for the :func:`blobs` data."""
    layers = [nnx.Linear(d, 16), nnx.ReLU()]
    if dropout:
        layers.append(nnx.Dropout(dropout))
    return nnx.Sequential(*layers, nnx.Linear(16, classes))


def fit_setup(batch_size: int = 16, lr: float = 0.05, dropout: float = 0.0, shuffle: bool = True) -> tuple:
    """``(model, Adam, train loader, val loader)`` on 96 :func:`blobs` (72 train, 24 validation), seeded."""
    nnx.manual_seed(0)
    X, y = blobs()
    train = nnx.data.DataLoader((X[:72], y[:72]), batch_size=batch_size, shuffle=shuffle)
    val = nnx.data.DataLoader((X[72:], y[72:]), batch_size=32)
    model = small_mlp(dropout=dropout)
    opt = nnx.optim.Adam(model.parameters(), lr=lr)
    return model, opt, train, val


def trainer_stub(model: Any = None) -> Any:
    """The part of ``nnx.training.Trainer`` a callback touches, for calling callbacks by hand."""
    from types import SimpleNamespace

    return SimpleNamespace(model=model, stop_training=False, log=lambda msg: None)
