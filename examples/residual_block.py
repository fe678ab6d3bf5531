"""A ResNet basic block as an nnx composite module with a hand-written backward.

    python examples/residual_block.py          # gradchecks the block and prints its shapes

nnx has no autograd graph: a module made of other modules writes ``backward`` itself. The
block's ``forward`` only calls its children (each leaf records its own closure); ``backward``
calls the children's ``backward`` in reverse order and adds the gradient of the skip path.
This file is an example, not part of nnx's API; ``benchmarks/bench_cnn.py`` and the tests use it.
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


class BasicBlock(nnx.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` (He et al., 2016), NCHW.

    Args:
        in_channels, out_channels: channels of input and output.
        stride: stride of the first 3x3 convolution; when it is not 1 or the channel count
            changes, the shortcut is a 1x1 convolution + BatchNorm (``downsample``), as torchvision.
        dtype: parameter dtype (default float32).

    State-dict keys follow torchvision's ``BasicBlock`` (``conv1.weight``, ``bn1.running_mean``,
    ``downsample.0.weight``, ...), so its weights load directly.

    >>> block = BasicBlock(64, 64)                    # doctest: +SKIP
    >>> y = block(x); dx = block.backward(dy)         # doctest: +SKIP
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
    for block in (BasicBlock(2, 2, dtype="float64"), BasicBlock(2, 3, stride=2, dtype="float64")):
        ok &= nnx.gradcheck(block, x)
        print(f"gradcheck passed: BasicBlock({block.conv1.in_channels}, {block.conv1.out_channels}, "
              f"stride={block.conv1.stride[0]}) output {tuple(block(x).shape)}")
        block.clear_tape()
    return ok


if __name__ == "__main__":
    main()
