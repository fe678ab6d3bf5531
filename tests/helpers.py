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
