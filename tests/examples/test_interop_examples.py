"""examples/export_onnx.py and examples/sklearn_digits.py run end to end (small settings)."""

from __future__ import annotations

import pytest

from helpers import load_example


def test_export_onnx_agrees_with_onnxruntime():
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn")
    pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'nnx-backprop[onnx]'")
    pytest.importorskip("onnxruntime", reason="the example runs the file with onnxruntime")
    result = load_example("export_onnx").main(["--epochs", "1", "--seed", "0"])
    assert result["agreement"] == 1.0 and result["n"] > 300
    assert result["max_abs_logit_diff"] < 1e-4
    assert result["reloaded_identical"]
    assert result["test_accuracy_nnx"] > 0.5  # one epoch; chance is 0.1


def test_sklearn_grid_search_example():
    pytest.importorskip("sklearn", reason="nnx.sklearn needs scikit-learn: pip install 'nnx-backprop[sklearn]'")
    result = load_example("sklearn_digits").main(["--max-iter", "4", "--cv", "2", "--seed", "0"])
    assert set(result["best_params"]) == {"hidden_layer_sizes", "lr"}
    assert result["test_accuracy"] > 0.8
