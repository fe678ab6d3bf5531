"""The combinator examples run and learn: resnet_digits (no hand-written backward) and residual_block."""

from __future__ import annotations

from helpers import load_example


def test_resnet_digits_learns_in_two_epochs():
    accuracy = load_example("resnet_digits").main(["--quiet", "--epochs", "2", "--width", "8", "--seed", "0"])
    assert accuracy > 0.5, "ten classes: chance is 0.1"


def test_residual_block_combinator_and_handwritten_forms_agree():
    assert load_example("residual_block").main(["--seed", "0"]) is True
