"""Training throughput of convolutional networks (float32, samples per second, higher is better).

1. LeNet-5 style on 1x28x28 inputs, batch 64, SGD momentum 0.9, cross-entropy:
   conv 6@5x5 pad 2, ReLU, maxpool 2, conv 16@5x5, ReLU, maxpool 2, fc 120, 84, 10 (ReLU between).
   Contestants, interleaved in one process, at 1 and 2 threads:
   - ``nnx``: nnx on the NumPy backend (layers, ``CrossEntropyLoss``, ``optim.SGD``);
   - ``numpy_floor``: the same math written by hand in raw NumPy (flat-shift im2col into kept,
     preallocated buffers, ``matmul(out=)``, col2im, separable max-pool): no framework at all;
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
from common import Batches, interleaved, machine, threads, time_steps, write  # noqa: E402

BATCH = 64
N_SAMPLES = 4096
LR, MOMENTUM = 0.01, 0.9
BLOCK_SHAPE = (16, 64, 32, 32)


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, N_SAMPLES).astype(np.int64)
    return x, y


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
    data = Batches(x, y, BATCH)

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
    data = Batches(torch.from_numpy(x), torch.from_numpy(y), BATCH)

    def step() -> None:
        xb, yb = data.next()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


class FloorConv:
    """Raw-NumPy stride-1 convolution with preallocated buffers: flat-shift im2col into a kept
    column buffer (``np.copyto``), one ``np.matmul(out=)``, no framework, no checks, no re-gather
    in backward. The same math as nnx's kernel; the floor a framework can approach."""

    def __init__(self, n: int, c: int, h: int, o: int, k: int, pad: int, rng: np.random.Generator) -> None:
        bound = 1.0 / math.sqrt(c * k * k)
        self.w = rng.uniform(-bound, bound, (o, c, k, k)).astype(np.float32)
        self.b = rng.uniform(-bound, bound, o).astype(np.float32)
        self.n, self.c, self.h, self.o, self.k, self.pad = n, c, h, o, k, pad
        self.hp = self.wp = h + 2 * pad
        self.oh = self.ow = self.hp - k + 1
        self.run = self.oh * self.wp
        self.xpad = np.zeros((n, c, self.hp + 1, self.wp), np.float32)
        self.flat = self.xpad.reshape(n, c, -1)
        self.cols = np.empty((n, k * k * c + 1, self.run), np.float32)
        self.cols[:, -1, :] = 1.0
        self.offsets = [a * self.wp + bb for a in range(k) for bb in range(k)]
        self.yext = np.empty((n, o, self.run), np.float32)
        self.dy_ext = np.zeros((n, o, self.oh, self.wp), np.float32)
        self.dflat = np.zeros_like(self.flat)
        self.dwk = np.empty((n, o, k * k * c + 1), np.float32)
        self.vel_w, self.vel_b = np.zeros_like(self.w), np.zeros_like(self.b)

    def wk(self) -> np.ndarray:
        o, c, k = self.o, self.c, self.k
        w = self.w.reshape(o, c, k * k).transpose(0, 2, 1).reshape(o, k * k * c)
        return np.concatenate([w, self.b[:, None]], axis=1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        p, h, c, run = self.pad, self.h, self.c, self.run
        self.xpad[:, :, p:p + h, p:p + h] = x
        for i, s in enumerate(self.offsets):
            np.copyto(self.cols[:, i * c:(i + 1) * c, :], self.flat[:, :, s:s + run])
        np.matmul(self.wk(), self.cols, out=self.yext)
        return self.yext.reshape(self.n, self.o, self.oh, self.wp)[:, :, :, :self.ow]

    def backward(self, dy: np.ndarray, input_grad: bool) -> np.ndarray | None:
        self.dy_ext[:, :, :, :self.ow] = dy
        dy3 = self.dy_ext.reshape(self.n, self.o, self.run)
        np.matmul(dy3, self.cols.transpose(0, 2, 1), out=self.dwk)
        dwk = self.dwk.sum(0)
        kc = self.k * self.k * self.c
        self.gw = dwk[:, :kc].reshape(self.o, self.k * self.k, self.c).transpose(0, 2, 1).reshape(self.w.shape)
        self.gb = dwk[:, kc]
        if not input_grad:
            return None
        dcols = np.matmul(self.wk()[:, :kc].T, dy3)
        self.dflat[...] = 0.0
        c, run = self.c, self.run
        for i, s in enumerate(self.offsets):
            self.dflat[:, :, s:s + run] += dcols[:, i * c:(i + 1) * c, :]
        p, h = self.pad, self.h
        return self.dflat.reshape(self.xpad.shape)[:, :, p:p + h, p:p + h]

    def sgd(self) -> None:
        for v, g, buf in ((self.w, self.gw, self.vel_w), (self.b, self.gb, self.vel_b)):
            buf *= MOMENTUM
            buf += g
            v -= LR * buf


def _pool2_forward(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m1 = np.maximum(a[..., 0::2], a[..., 1::2])
    return np.maximum(m1[:, :, 0::2], m1[:, :, 1::2]), m1


def _pool2_backward(dout: np.ndarray, a: np.ndarray, m1: np.ndarray, out: np.ndarray) -> np.ndarray:
    n, c, h, w = a.shape
    top = dout * (m1[:, :, 0::2] == out)
    dm1 = np.stack([top, dout - top], axis=3).reshape(n, c, h, w // 2)
    left = dm1 * (a[..., 0::2] == m1)
    return np.stack([left, dm1 - left], axis=4).reshape(n, c, h, w)


def numpy_floor_step(x: np.ndarray, y: np.ndarray):
    """LeNet-5 forward, backward and SGD-momentum written by hand in raw NumPy: the floor."""
    rng = np.random.default_rng(0)
    conv1 = FloorConv(BATCH, 1, 28, 6, 5, 2, rng)
    conv2 = FloorConv(BATCH, 6, 14, 16, 5, 0, rng)

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    p = {"w3": uniform((120, 400), 400), "b3": uniform((120,), 400), "w4": uniform((84, 120), 120),
         "b4": uniform((84,), 120), "w5": uniform((10, 84), 84), "b5": uniform((10,), 84)}
    bufs = {k: np.zeros_like(v) for k, v in p.items()}
    data = Batches(x, y, BATCH)
    rows = np.arange(BATCH)

    def step() -> None:
        xb, yb = data.next()
        n = xb.shape[0]
        a1 = np.maximum(conv1.forward(xb), 0.0)
        p1, m1 = _pool2_forward(a1)
        a2 = np.maximum(conv2.forward(p1), 0.0)
        p2, m2 = _pool2_forward(a2)
        f = p2.reshape(n, 400)
        h3 = np.maximum(f @ p["w3"].T + p["b3"], 0.0)
        h4 = np.maximum(h3 @ p["w4"].T + p["b4"], 0.0)
        logits = h4 @ p["w5"].T + p["b5"]
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
        da2 = _pool2_backward(df, a2, m2, p2) * (a2 > 0)
        dp1 = conv2.backward(da2, True)
        da1 = _pool2_backward(dp1, a1, m1, p1) * (a1 > 0)
        conv1.backward(da1, False)
        conv1.sgd()
        conv2.sgd()
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
