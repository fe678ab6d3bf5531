"""Training throughput of convolutional networks (float32, samples per second, higher is better).

1. LeNet-5 style on 1x28x28 inputs, batch 64, SGD momentum 0.9, cross-entropy:
   conv 6@5x5 pad 2, ReLU, maxpool 2, conv 16@5x5, ReLU, maxpool 2, fc 120, 84, 10 (ReLU between).
   Contestants, interleaved in one process, at 1 and 2 threads:
   - ``nnx``: nnx on the NumPy backend (layers, ``CrossEntropyLoss``, ``optim.SGD``);
   - ``numpy_floor``: the same math written by hand in raw NumPy (im2col through
     ``sliding_window_view`` + matmul, col2im, reshape max-pool): no framework at all;
   - ``torch``: PyTorch CPU (oneDNN/MKL-DNN convolutions).
2. A ResNet basic block (3x3 conv, BatchNorm, ReLU, 3x3 conv, BatchNorm, residual add, ReLU)
   at 64 channels, 32x32, batch 16: forward + backward + SGD step, nnx vs PyTorch.

Usage: ``python benchmarks/bench_cnn.py [--quick] [--repeats 5] [--threads 1 2]``.
Writes benchmarks/results/cnn.json (``"quick": true`` inside marks a short run).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))
from common import interleaved, machine, threads, time_steps, write  # noqa: E402

BATCH = 64
N_SAMPLES = 4096
LR, MOMENTUM = 0.01, 0.9
BLOCK_SHAPE = (16, 64, 32, 32)


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, N_SAMPLES).astype(np.int64)
    return x, y


class Batches:
    """Cycles through the data in fixed batches (the same order for every contestant)."""

    def __init__(self, x, y) -> None:
        self.x, self.y, self.i = x, y, 0

    def next(self):
        i = self.i
        self.i = (i + BATCH) % (len(self.x) - BATCH)
        return self.x[i:i + BATCH], self.y[i:i + BATCH]


# ------------------------------------------------------------------------------ LeNet-5
def nnx_lenet():
    import nnx

    return nnx.Sequential(
        nnx.Conv2d(1, 6, 5, padding=2), nnx.ReLU(), nnx.MaxPool2d(2),
        nnx.Conv2d(6, 16, 5), nnx.ReLU(), nnx.MaxPool2d(2),
        nnx.Flatten(),
        nnx.Linear(400, 120), nnx.ReLU(), nnx.Linear(120, 84), nnx.ReLU(), nnx.Linear(84, 10),
    )


def nnx_step(x: np.ndarray, y: np.ndarray):
    import nnx

    nnx.set_backend("numpy")
    nnx.manual_seed(0)
    model = nnx_lenet()
    loss_fn = nnx.CrossEntropyLoss()
    opt = nnx.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    data = Batches(x, y)

    def step() -> None:
        xb, yb = data.next()
        loss_fn(model(xb), yb)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()

    return step


def torch_step(x: np.ndarray, y: np.ndarray):
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    data = Batches(torch.from_numpy(x), torch.from_numpy(y))

    def step() -> None:
        xb, yb = data.next()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _im2col(xpad: np.ndarray, k: int, oh: int, ow: int) -> np.ndarray:
    win = np.lib.stride_tricks.sliding_window_view(xpad, (k, k), axis=(2, 3))  # (N, C, OH, OW, k, k)
    n, c = xpad.shape[:2]
    return win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * k * k, oh * ow)


def _col2im(dcols: np.ndarray, shape: tuple[int, ...], k: int, oh: int, ow: int) -> np.ndarray:
    n, c, hp, wp = shape
    d6 = dcols.reshape(n, c, k, k, oh, ow)
    dx = np.zeros(shape, np.float32)
    for i in range(k):
        for j in range(k):
            dx[:, :, i:i + oh, j:j + ow] += d6[:, :, i, j]
    return dx


def numpy_floor_step(x: np.ndarray, y: np.ndarray):
    """LeNet-5 forward, backward and SGD-momentum written by hand in NumPy: the floor."""
    rng = np.random.default_rng(0)

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    p = {
        "w1": uniform((6, 1, 5, 5), 25), "b1": uniform((6,), 25),
        "w2": uniform((16, 6, 5, 5), 150), "b2": uniform((16,), 150),
        "w3": uniform((120, 400), 400), "b3": uniform((120,), 400),
        "w4": uniform((84, 120), 120), "b4": uniform((84,), 120),
        "w5": uniform((10, 84), 84), "b5": uniform((10,), 84),
    }
    bufs = {k: np.zeros_like(v) for k, v in p.items()}
    data = Batches(x, y)
    rows = np.arange(BATCH)

    def pool_forward(a: np.ndarray):
        n, c, h, w = a.shape
        r = a.reshape(n, c, h // 2, 2, w // 2, 2)
        out = r.max(axis=(3, 5))
        mask = r == out[:, :, :, None, :, None]
        return out, mask

    def pool_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n, c, h2, _, w2, _ = mask.shape
        return (mask * dout[:, :, :, None, :, None]).reshape(n, c, h2 * 2, w2 * 2)

    def step() -> None:
        xb, yb = data.next()
        n = xb.shape[0]
        # conv1 (pad 2) + relu + pool
        x1 = np.zeros((n, 1, 32, 32), np.float32)
        x1[:, :, 2:30, 2:30] = xb
        c1 = _im2col(x1, 5, 28, 28)
        a1 = np.matmul(p["w1"].reshape(6, 25), c1).reshape(n, 6, 28, 28)
        a1 += p["b1"][:, None, None]
        np.maximum(a1, 0.0, out=a1)
        p1, m1 = pool_forward(a1)
        # conv2 + relu + pool
        c2 = _im2col(p1, 5, 10, 10)
        a2 = np.matmul(p["w2"].reshape(16, 150), c2).reshape(n, 16, 10, 10)
        a2 += p["b2"][:, None, None]
        np.maximum(a2, 0.0, out=a2)
        p2, m2 = pool_forward(a2)
        f = p2.reshape(n, 400)
        h3 = np.maximum(f @ p["w3"].T + p["b3"], 0.0)
        h4 = np.maximum(h3 @ p["w4"].T + p["b4"], 0.0)
        logits = h4 @ p["w5"].T + p["b5"]
        # softmax cross-entropy gradient
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        e /= e.sum(axis=1, keepdims=True)
        e[rows[:n], yb] -= 1.0
        d5 = e * (1.0 / n)
        g = {"w5": d5.T @ h4, "b5": d5.sum(0)}
        d4 = (d5 @ p["w5"]) * (h4 > 0)
        g["w4"], g["b4"] = d4.T @ h3, d4.sum(0)
        d3 = (d4 @ p["w4"]) * (h3 > 0)
        g["w3"], g["b3"] = d3.T @ f, d3.sum(0)
        df = (d3 @ p["w3"]).reshape(n, 16, 5, 5)
        da2 = pool_backward(df, m2) * (a2 > 0)
        da2 = da2.reshape(n, 16, 100)
        g["w2"] = np.matmul(da2, c2.transpose(0, 2, 1)).sum(0).reshape(16, 6, 5, 5)
        g["b2"] = da2.sum(axis=(0, 2))
        dp1 = _col2im(np.matmul(p["w2"].reshape(16, 150).T, da2), (n, 6, 14, 14), 5, 10, 10)
        da1 = (pool_backward(dp1, m1) * (a1 > 0)).reshape(n, 6, 784)
        g["w1"] = np.matmul(da1, c1.transpose(0, 2, 1)).sum(0).reshape(6, 1, 5, 5)
        g["b1"] = da1.sum(axis=(0, 2))
        for k, v in p.items():  # SGD with momentum (torch's rule)
            buf = bufs[k]
            buf *= MOMENTUM
            buf += g[k]
            v -= LR * buf

    return step


# ------------------------------------------------------------------------------ ResNet basic block
def nnx_block_step(x: np.ndarray, dy: np.ndarray):
    from residual_block import BasicBlock

    import nnx

    nnx.set_backend("numpy")
    nnx.manual_seed(0)
    block = BasicBlock(64, 64)
    opt = nnx.optim.SGD(block.parameters(), lr=LR, momentum=MOMENTUM)

    def step() -> None:
        block(x)
        block.backward(dy)
        opt.step()
        opt.zero_grad()

    return step


def torch_block_step(x: np.ndarray, dy: np.ndarray):
    import torch

    torch.manual_seed(0)
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(64)

        def forward(self, t):
            out = torch.relu(self.bn1(self.conv1(t)))
            return torch.relu(self.bn2(self.conv2(out)) + t)

    block = Block()
    opt = torch.optim.SGD(block.parameters(), lr=LR, momentum=MOMENTUM)
    tx = torch.from_numpy(x).requires_grad_(True)
    tdy = torch.from_numpy(dy)

    def step() -> None:
        block(tx).backward(tdy)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tx.grad = None

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run to check the script")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="timed LeNet steps per run (default 60)")
    parser.add_argument("--block-steps", type=int, default=None, help="timed ResNet-block steps per run (default 10)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=None, help="results name (benchmarks/results/<out>.json)")
    args = parser.parse_args(argv)
    steps = args.steps or (10 if args.quick else 60)
    block_steps = args.block_steps or (2 if args.quick else 10)
    repeats = 1 if args.quick else args.repeats
    x, y = make_data()
    rng = np.random.default_rng(1)
    bx = rng.standard_normal(BLOCK_SHAPE, dtype=np.float32)
    bdy = rng.standard_normal(BLOCK_SHAPE, dtype=np.float32)

    lenet, block = {}, {}
    for n_threads in args.threads:
        with threads(n_threads):
            steppers = {"nnx": nnx_step(x, y), "numpy_floor": numpy_floor_step(x, y)}
            if not args.no_torch:
                steppers["torch"] = torch_step(x, y)
            runners = {k: (lambda s=s: steps * BATCH / time_steps(s, steps, warmup=3)) for k, s in steppers.items()}
            res = interleaved(runners, repeats)
            for r in res.values():
                r["nnx_ratio"] = res["nnx"]["median"] / r["median"]
            lenet[f"{n_threads}_thread"] = res

            bsteppers = {"nnx": nnx_block_step(bx, bdy)}
            if not args.no_torch:
                bsteppers["torch"] = torch_block_step(bx, bdy)
            brunners = {k: (lambda s=s: block_steps * BLOCK_SHAPE[0] / time_steps(s, block_steps, warmup=1))
                        for k, s in bsteppers.items()}
            bres = interleaved(brunners, repeats)
            for r in bres.values():
                r["nnx_ratio"] = bres["nnx"]["median"] / r["median"]
            block[f"{n_threads}_thread"] = bres
    payload = {
        "benchmark": "CNN training throughput, float32, samples/s (median of interleaved runs)",
        "lenet5": {"model": "conv6@5x5p2-relu-pool2-conv16@5x5-relu-pool2-fc120-fc84-fc10, 1x28x28, batch 64, "
                            "SGD momentum 0.9", "steps_per_run": steps, "results": lenet},
        "resnet_basic_block": {"model": "BasicBlock 64ch 3x3 (conv-bn-relu-conv-bn-add-relu), 32x32, batch 16, "
                                        "SGD momentum 0.9", "steps_per_run": block_steps, "results": block},
        "repeats": repeats,
        "quick": args.quick,
        "machine": machine(),
    }
    write(args.out or "cnn", payload)
    return payload


if __name__ == "__main__":
    main()
