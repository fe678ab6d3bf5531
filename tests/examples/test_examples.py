"""The example scripts run end to end and reach their stated results (NumPy backend, CPU)."""

from __future__ import annotations

import os

import pytest

from helpers import EXAMPLES, load_example


def test_mlp_digits_reaches_97_percent():
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    accuracy = load_example("mlp_digits").main(["--quiet", "--epochs", "30", "--seed", "0"])
    assert accuracy >= 0.97


def test_mlp_digits_trains_with_amp():
    """--amp: float16 forward and backward, float32 master weights, dynamic loss scaling (NumPy float16
    is slow, so a few epochs: the full 30 reach the float32 run's 98.3%, see docs/gpu.md)."""
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    accuracy = load_example("mlp_digits").main(["--quiet", "--epochs", "4", "--seed", "0", "--amp"])
    assert accuracy >= 0.9


def test_custom_backward_example_gradchecks_and_fits():
    assert load_example("custom_backward").main(["--seed", "0"]) < 0.05


@pytest.mark.parametrize("name", ["array_api_strict", "torch"])
def test_mlp_digits_runs_on_other_backends(name):
    import nnx

    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    if nnx.available_backends().get(name) is not True:
        pytest.skip(f"backend {name} not available: {nnx.available_backends().get(name)}")
    try:
        accuracy = load_example("mlp_digits").main(["--quiet", "--epochs", "5", "--backend", name])
    finally:
        nnx.set_backend("numpy")
    assert accuracy >= 0.9


def test_readme_example_runs_and_learns(capsys):
    """The README's 20-line example is real code: it runs and fits its (random) labels."""
    import re

    import nnx

    readme = open(os.path.join(os.path.dirname(EXAMPLES), "README.md")).read()
    code = re.search(r"## A 20-line example\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 22
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        nnx.set_backend("numpy")
    final_loss = float(capsys.readouterr().out.split()[-1])
    assert final_loss < 0.9  # log(3) = 1.10 at the start: the model has learned
