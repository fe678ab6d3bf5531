"""The recurrent examples run end to end and learn (NumPy backend; small settings where needed)."""

from __future__ import annotations

import pytest

from helpers import load_example


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_sequence_digits_reaches_95_percent(cell):
    pytest.importorskip("sklearn")
    accuracy = load_example("rnn_sequence_digits").main(["--quiet", "--cell", cell, "--seed", "0"])
    assert accuracy >= 0.95


def test_char_lm_learns_and_samples():
    result = load_example("char_lm").main(["--quiet", "--max-chars", "20000", "--epochs", "2", "--hidden", "64",
                                    "--seq-len", "32", "--sample-length", "40", "--temperature", "0.5"])
    first, last = result["history"][0], result["history"][-1]
    assert last["val_ppl"] < first["val_ppl"] < result["vocab"]   # better than uniform, and improving
    assert last["train_ppl"] < first["train_ppl"]
    assert result["sample"].startswith("def ") and len(result["sample"]) == 44


@pytest.mark.parametrize("name", ["array_api_strict", "torch"])
def test_rnn_sequence_digits_runs_on_other_backends(name):
    import nnx

    pytest.importorskip("sklearn")
    if nnx.available_backends().get(name) is not True:
        pytest.skip(f"backend {name} not available: {nnx.available_backends().get(name)}")
    try:
        accuracy = load_example("rnn_sequence_digits").main(["--quiet", "--epochs", "3", "--cell", "gru",
                                                      "--backend", name])
    finally:
        nnx.set_backend("numpy")
    assert accuracy >= 0.85
