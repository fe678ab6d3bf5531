"""Doctests of nnx/ run with the README's test command (``--doctest-modules``): each sees ``nnx`` and
runs on the numpy backend."""

from __future__ import annotations

import importlib.util
import os

import pytest

# One BLAS/OpenMP thread per test process (set before NumPy loads; see tests/conftest.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# Import nnx before collection: with --import-mode=importlib, a module file collected for its
# doctests before the package was imported (``pytest nnx/callbacks.py``) would otherwise become a
# second copy of that module, whose classes fail isinstance checks against nnx's own.
import nnx  # noqa: E402

# nnx/sklearn.py imports scikit-learn (and SciPy) at the top, so its doctests cannot even be
# collected without them; the other optional packages are skipped inside the examples
# (``pytest.importorskip``), which pytest reports as skipped.
collect_ignore = [] if all(importlib.util.find_spec(m) for m in ("sklearn", "scipy")) else ["nnx/sklearn.py"]


@pytest.fixture(autouse=True)
def _doctest_on_numpy(request: pytest.FixtureRequest):
    if type(request.node).__name__ != "DoctestItem":
        yield
        return
    request.getfixturevalue("doctest_namespace")["nnx"] = nnx
    with nnx.use_backend("numpy"):
        nnx.manual_seed(0)
        yield
