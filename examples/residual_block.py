"""A ResNet basic block two ways: composed from combinators (no backward to write), and by hand.

    python examples/residual_block.py          # gradchecks both blocks and checks that they agree

The usual way is :func:`basic_block`: ``nnx.Residual(body, shortcut)`` followed by a ReLU, whose
backward nnx derives from the children's. :class:`BasicBlock` is the same block written as a
composite module with a hand-written backward: the way to write one for a genuinely new
composition (it calls the children's ``backward`` in reverse order and adds the gradient of the
skip path). It keeps torchvision's state_dict keys; ``benchmarks/bench_cnn.py`` and the tests use it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the examples' shared CLI helper
from example_cli import add_runtime_args, description, setup_runtime  # noqa: E402


def basic_block(in_channels: int, out_channels: int, stride: int = 1, dtype: Any = None) -> nnx.Sequential:
    """``relu(body(x) + shortcut(x))`` from combinators: the backward is derived, nothing to write.

    >>> block = basic_block(2, 3, stride=2, dtype="float64")
    >>> tuple(block(nnx.asarray(np.zeros((1, 2, 4, 4)), dtype="float64")).shape)
    (1, 3, 2, 2)
    """
    body = nnx.Sequential(
        nnx.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, dtype=dtype),
        nnx.BatchNorm2d(out_channels, dtype=dtype), nnx.ReLU(),
        nnx.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, dtype=dtype),
        nnx.BatchNorm2d(out_channels, dtype=dtype),
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = nnx.Sequential(nnx.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, dtype=dtype),
                                  nnx.BatchNorm2d(out_channels, dtype=dtype))
    return nnx.Sequential(nnx.Residual(body, shortcut), nnx.ReLU())


def load_from_handwritten(block: nnx.Sequential, hand: BasicBlock) -> None:
    """Give the combinator block the weights of a hand-written :class:`BasicBlock` (torchvision keys)."""
    residual = block[0]
    body = residual.block
    pairs = [(body[0], hand.conv1), (body[1], hand.bn1), (body[3], hand.conv2), (body[4], hand.bn2)]
    if hand.downsample is not None:
        pairs += [(residual.shortcut[0], hand.downsample[0]), (residual.shortcut[1], hand.downsample[1])]
    for mine, theirs in pairs:
        mine.load_state_dict(theirs.state_dict())


class BasicBlock(nnx.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` (He et al., 2016), NCHW.

    Args:
        in_channels, out_channels: channels of input and output.
        stride: stride of the first 3x3 convolution; when it is not 1 or the channel count
            changes, the shortcut is a 1x1 convolution + BatchNorm (``downsample``), as torchvision.
        dtype: parameter dtype (default float32).

    State-dict keys follow torchvision's ``BasicBlock`` (``conv1.weight``, ``bn1.running_mean``,
    ``downsample.0.weight``, ...), so its weights load directly.

    >>> block = BasicBlock(2, 2, dtype="float64")
    >>> y = block(nnx.asarray(np.ones((1, 2, 4, 4)), dtype="float64"))
    >>> tuple(block.backward(nnx.asarray(np.ones((1, 2, 4, 4)), dtype="float64")).shape)
    (1, 2, 4, 4)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dtype: Any = None) -> None:
        super().__init__()
        self.conv1 = nnx.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False, dtype=dtype)
        self.bn1 = nnx.BatchNorm2d(out_channels, dtype=dtype)
        self.relu1 = nnx.ReLU()
        self.conv2 = nnx.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, dtype=dtype)
        self.bn2 = nnx.BatchNorm2d(out_channels, dtype=dtype)
        self.relu2 = nnx.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nnx.Sequential(
                nnx.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False, dtype=dtype),
                nnx.BatchNorm2d(out_channels, dtype=dtype),
            )
        else:
            self.downsample = None

    def forward(self, x: Any) -> Any:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = self.downsample(x) if self.downsample is not None else x
        return self.relu2(out + skip)

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        d = self.relu2.backward(grad_output)           # the sum's gradient goes to both branches
        body = self.relu1.backward(self.conv2.backward(self.bn2.backward(d)))
        body = self.conv1.backward(self.bn1.backward(body), input_grad=input_grad)
        if self.downsample is not None:
            skip = self.downsample.backward(d, input_grad=input_grad)
        else:
            skip = d if input_grad else None
        return body + skip if input_grad else None


def main(argv: list[str] | None = None) -> bool:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_runtime_args(parser)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_runtime(args)
    nnx.manual_seed(args.seed)
    x = nnx.asarray(np.random.default_rng(args.seed).standard_normal((2, 2, 4, 4)), dtype="float64")
    ok = True
    for c_out, stride in ((2, 1), (3, 2)):
        hand = BasicBlock(2, c_out, stride=stride, dtype="float64")
        composed = basic_block(2, c_out, stride=stride, dtype="float64")
        load_from_handwritten(composed, hand)
        ok &= nnx.gradcheck(composed, x) and nnx.gradcheck(hand, x)
        dy = nnx.asarray(np.random.default_rng(1).standard_normal(tuple(hand(x).shape)), dtype="float64")
        hand.clear_tape()
        y1, y2 = composed(x), hand(x)
        dx1, dx2 = composed.backward(dy), hand.backward(dy)
        same = bool(np.allclose(nnx.to_numpy(y1), nnx.to_numpy(y2)) and np.allclose(nnx.to_numpy(dx1),
                                                                                       nnx.to_numpy(dx2)))
        ok &= same
        print(f"basic block 2->{c_out} stride {stride}: gradcheck passed for both forms; combinator and "
              f"hand-written outputs and input gradients {'agree' if same else 'DIFFER'}; output {tuple(y1.shape)}")
    return bool(ok)


if __name__ == "__main__":
    main()
