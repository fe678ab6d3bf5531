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
    dy_host = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy_host))
    dx = layer.backward(nnx.asarray(dy_host, dtype="float64"))
    assert_close(dx, tx.grad, rtol=tol, atol=tol, what="input gradient")
    tparams = dict(tlayer.named_parameters())
    for name, p in layer.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=tol, atol=tol, what=f"gradient of {name}")
    assert host(y).dtype == np.float64
    return y


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
