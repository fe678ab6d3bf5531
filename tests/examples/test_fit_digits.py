"""examples/fit_digits.py runs end to end: fit with callbacks, checkpoints, plot, then a resume."""

from __future__ import annotations

import importlib.util
import os

import pytest

import nnx

from helpers import EXAMPLES

EXAMPLE = os.path.join(EXAMPLES, "fit_digits.py")


def test_fit_digits_example(tmp_path):
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    spec = importlib.util.spec_from_file_location("fit_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        acc = module.main(["--quick", "--quiet", "--plot", "--out", str(tmp_path)])
        assert acc >= 0.85
        assert {"best.nnx", "last.nnx", "log.csv", "curves.png"} <= set(os.listdir(tmp_path))
        assert nnx.load_checkpoint(tmp_path / "last.nnx", rng=False)["epoch"] == 2
        module.main(["--epochs", "4", "--quiet", "--resume", "--out", str(tmp_path)])
        assert nnx.load_checkpoint(tmp_path / "last.nnx", rng=False)["epoch"] == 3
        assert len((tmp_path / "log.csv").read_text().splitlines()) == 1 + 4
    finally:
        nnx.set_backend("numpy")
