"""Doctests of nnx/ run with the README's test command (``--doctest-modules``): each sees ``nnx`` and
runs on the numpy backend."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _doctest_on_numpy(request: pytest.FixtureRequest):
    if type(request.node).__name__ != "DoctestItem":
        yield
        return
    import nnx

    request.getfixturevalue("doctest_namespace")["nnx"] = nnx
    with nnx.use_backend("numpy"):
        nnx.manual_seed(0)
        yield
