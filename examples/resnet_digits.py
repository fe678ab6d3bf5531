"""Train a small ResNet on scikit-learn's handwritten digits, built from combinators with no hand-written backward.

    python examples/resnet_digits.py                   # NumPy on the CPU
    python examples/resnet_digits.py --backend cupy    # the same script on a CUDA GPU

The network is a stem convolution and three stages of ResNet basic blocks (He et al., 2016),
the second and third downsampling with a strided 1x1 convolution + BatchNorm shortcut, then
global average pooling and a linear classifier. Every block is ``nnx.Residual(body, shortcut)``
followed by a ReLU, so the model's backward is derived: nothing here writes one. The data
ships inside scikit-learn (no download); the training images are shifted by up to one pixel.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from tqdm import tqdm

import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the examples' shared CLI helper
from cnn_digits import load_data, random_shift  # noqa: E402
from example_cli import add_runtime_args, description, setup_runtime  # noqa: E402


def basic_block(in_channels: int, out_channels: int, stride: int = 1) -> nnx.Sequential:
    """``relu(body(x) + shortcut(x))``: two 3x3 conv-BN layers, and a 1x1 conv-BN shortcut when the
    shape changes (identity otherwise)."""
    body = nnx.Sequential(
        nnx.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nnx.BatchNorm2d(out_channels), nnx.ReLU(),
        nnx.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nnx.BatchNorm2d(out_channels),
    )
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = nnx.Sequential(nnx.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                  nnx.BatchNorm2d(out_channels))
    return nnx.Sequential(nnx.Residual(body, shortcut), nnx.ReLU())


def build_model(width: int = 32) -> nnx.Sequential:
    """(N, 1, 8, 8) -> (N, 10) logits."""
    return nnx.Sequential(
        nnx.Conv2d(1, width, 3, padding=1, bias=False), nnx.BatchNorm2d(width), nnx.ReLU(),   # 8 x 8
        basic_block(width, width),
        basic_block(width, 2 * width, stride=2),                                              # 4 x 4
        basic_block(2 * width, 4 * width, stride=2),                                          # 2 x 2
        nnx.AdaptiveAvgPool2d(1), nnx.Flatten(),
        nnx.Linear(4 * width, 10),
    )


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_runtime_args(parser)
    parser.add_argument("--epochs", type=int, default=30, help="Passes over the training images (default 30).")
    parser.add_argument("--width", type=int, default=32, help="Channels of the first stage (default 32).")
    parser.add_argument("--batch-size", type=int, default=64, help="Images per step (default 64).")
    parser.add_argument("--lr", type=float, default=3e-3, help="Peak learning rate of AdamW (default 3e-3).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the weights, the split and the shifts.")
    parser.add_argument("--quiet", action="store_true", help="Do not show a progress bar.")
    args = parser.parse_args(argv)

    setup_runtime(args)
    nnx.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.seed)

    model = build_model(args.width)
    loss_fn = nnx.CrossEntropyLoss(label_smoothing=0.05)
    optimizer = nnx.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    scheduler = nnx.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)

    backend = nnx.get_backend()
    xp = backend.xp
    xt, yt = nnx.asarray(x_test), nnx.asarray(y_test)
    n = len(x_train)
    start = time.perf_counter()
    bar = tqdm(range(args.epochs), desc=f"resnet_digits [{backend.name}]", disable=args.quiet)
    for _epoch in bar:
        model.train()
        xs, ys = nnx.asarray(random_shift(x_train, rng)), nnx.asarray(y_train)
        order = backend.permutation(n)
        total = xp.zeros((), dtype=xs.dtype, device=backend.device)
        for i in range(0, n, args.batch_size):
            idx = order[i:min(i + args.batch_size, n)]
            loss = loss_fn(model(xp.take(xs, idx, axis=0)), xp.take(ys, idx, axis=0))
            model.backward(loss_fn.backward(), input_grad=False)   # derived through every Residual
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            total = total + loss * idx.shape[0]
        bar.set_postfix(loss=f"{float(total) / n:.4f}")
    elapsed = time.perf_counter() - start

    model.eval()
    with nnx.no_grad():
        predicted = xp.argmax(model(xt), axis=1)
    accuracy = float(xp.mean(xp.astype(predicted == yt, xt.dtype)))
    print(f"test accuracy {accuracy:.4f} after {args.epochs} epochs in {elapsed:.1f} s "
          f"on {backend.name} ({backend.device_name})")
    return accuracy


if __name__ == "__main__":
    main()
