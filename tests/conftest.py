"""Shared fixtures: every numeric test runs once per backend that works on this machine.

CI runs numpy, array_api_strict (standard only: proves the CuPy code path) and torch (CPU); a
machine with a CUDA GPU adds cupy. Unavailable backends are skipped with the registry's reason.
"""

from __future__ import annotations

import os
import sys

# One BLAS/OpenMP thread per test process: pytest-xdist supplies the parallelism, and several
# processes each spinning up BLAS threads on tiny matrices oversubscribe the cores (3x slower).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

import nnx  # noqa: E402

try:
    import torch as _torch

    _torch.set_num_threads(1)
except ImportError:
    pass

#: The backends every numeric test runs on. NNX_TEST_BACKENDS overrides the list: a comma-separated
#: list of registered names (a plug-in backend registered through the ``nnx.backends`` entry point
#: included), or ``all`` for every registered backend.
DEFAULT_BACKENDS = ["numpy", "array_api_strict", "torch", "cupy"]


def _backend_names() -> list[str]:
    wanted = os.environ.get("NNX_TEST_BACKENDS", "").strip()
    if not wanted:
        return DEFAULT_BACKENDS
    if wanted == "all":
        return nnx.backend_names()
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = sorted(set(names) - set(nnx.backend_names()))
    if unknown:
        raise pytest.UsageError(f"NNX_TEST_BACKENDS names unregistered backends {unknown}; "
                                f"registered: {nnx.backend_names()}")
    return names


BACKEND_NAMES = _backend_names()

# On JAX every eager operation is compiled by XLA for each new shape, and a test meets hundreds of
# shapes: about half of a JAX test's time is compiling. XLA:CPU's plain emitters at optimisation
# level 0 compile 1.5-2x faster (the same results: the suite passes the same). For the test run only,
# and only where the caller has not set XLA_FLAGS; it must be set before JAX's first computation.
if "jax" in BACKEND_NAMES and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"


def _params() -> list:
    out = []
    for name in BACKEND_NAMES:
        marks = [pytest.mark.cupy] if name == "cupy" else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out


@pytest.fixture(params=_params())
def backend(request: pytest.FixtureRequest):
    """The backend under test, made current for the test body, seeded with 0."""
    name = request.param
    status = nnx.available_backends().get(name)
    if status is not True:
        pytest.skip(f"backend {name!r} not available here: {status}")
    with nnx.use_backend(name) as b:
        nnx.manual_seed(0)
        yield b


@pytest.fixture
def torch():
    """PyTorch, the test oracle (skips with a reason when it is not installed)."""
    return pytest.importorskip("torch", reason="PyTorch is the parity oracle; pip install torch==2.13.0")
