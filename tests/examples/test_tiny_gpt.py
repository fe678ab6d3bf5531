"""examples/tiny_gpt.py: a tiny run learns (validation perplexity falls below uniform and improves) and samples."""

from __future__ import annotations

from helpers import load_example


def test_tiny_gpt_learns_and_samples():
    result = load_example("tiny_gpt").main([
        "--quiet", "--max-chars", "20000", "--time-budget", "60", "--max-steps", "40", "--eval-every", "20",
        "--seq-len", "32", "--batch-size", "16", "--d-model", "32", "--heads", "2", "--layers", "1",
        "--sample-length", "20"])
    first, last = result["history"][0], result["history"][-1]
    assert last["val_ppl"] < first["val_ppl"] < result["vocab"]
    assert result["steps"] == 40
    assert result["sample"].startswith("def ") and len(result["sample"]) == 24
