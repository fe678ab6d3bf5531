"""Write your own op and your own composite module, with their backward passes, and prove them.

    python examples/custom_backward.py [--backend numpy]

1. A functional op is a pair: ``forward(x) -> (y, backward)`` where ``backward(dy)`` returns
   ``(dx, parameter_grads)`` and keeps exactly what it needs (here: the input).
2. A leaf Module calls the op and records the closure while training; ``Module.backward``
   replays it.
3. A composite Module (a residual block) writes ``backward`` by calling its children's backward
   in reverse order and adding the gradient of the skip connection.
4. ``nnx.gradcheck`` compares each backward with central differences in float64.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the examples' shared CLI helper
from example_cli import add_runtime_args, description, setup_runtime  # noqa: E402


def square_forward(x):
    """y = x ** 2; dy/dx = 2 x."""
    y = x * x

    def backward(dy, input_grad=True):
        return 2.0 * x * dy, ()

    return y, backward


class Square(nnx.Module):
    """A leaf layer over the op above."""

    def forward(self, x):
        y, backward = square_forward(x)
        return self.record(y, backward)  # kept only in training mode, outside nnx.no_grad()


class Residual(nnx.Module):
    """y = x + f(x), with f any module; its backward adds the skip connection's gradient."""

    def __init__(self, body: nnx.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)

    def backward(self, grad_output, *, input_grad=True):
        return grad_output + self.body.backward(grad_output)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_runtime_args(parser)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_runtime(args)
    nnx.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    x64 = nnx.asarray(rng.standard_normal((3, 4)), dtype="float64")
    nnx.gradcheck(square_forward, x64)
    block = Residual(nnx.Sequential(nnx.Linear(4, 8, dtype="float64"), nnx.Tanh(), Square(),
                                    nnx.Linear(8, 4, dtype="float64")))
    nnx.gradcheck(block, x64)
    print("gradcheck passed: square_forward and Residual(...)")

    # Fit y = sin(x) summed over features with a stack of residual blocks.
    model = nnx.Sequential(nnx.Linear(4, 16), Residual(nnx.Sequential(nnx.Linear(16, 16), nnx.Tanh())),
                           nnx.Linear(16, 1))
    x = nnx.asarray(rng.uniform(-2, 2, (256, 4)))
    y = nnx.asarray(np.sin(nnx.to_numpy(x)).sum(axis=1, keepdims=True))
    loss_fn = nnx.MSELoss()
    opt = nnx.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()
    final = float(loss)
    print(f"residual regression: final MSE {final:.4f}")
    return final


if __name__ == "__main__":
    main()
