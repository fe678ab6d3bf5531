"""The GPU-issue workloads (issue 8, item 1), built for nnx and for PyTorch with the same shapes.

``nnx_step(name, batch)`` and ``torch_step(name, batch, device)`` return a zero-argument function
running one full training step (forward, loss, backward, optimizer) on data created once. Used by
``launches.py`` (operation counts) and ``bench_gpu.py`` (timings).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

import nnx

#: (workload, batch sizes) of the issue; ``tiny`` sizes for CPU smoke runs
WORKLOADS = {"mlp": (128, 1024), "lenet": (64, 512), "resnet_block": (16, 128), "lstm": (64, 512), "gru": (64, 512),
             "transformer": (8, 32)}
SEQ, FEAT, HIDDEN = 32, 32, 128
#: transformer workload: one TransformerEncoderLayer (as benchmarks/bench_transformer.py), MSE, Adam
D_MODEL, NHEAD, FFN, TSEQ = 256, 4, 1024, 128


def _basic_block() -> Any:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from residual_block import BasicBlock

    return BasicBlock


def _data(name: str, batch: int, rng: np.random.Generator, tiny: bool = False) -> tuple[np.ndarray, np.ndarray]:
    if name == "mlp":
        return rng.standard_normal((batch, 784)), rng.integers(0, 10, batch)
    if name == "lenet":
        return rng.standard_normal((batch, 1, 28, 28)), rng.integers(0, 10, batch)
    if name == "resnet_block":
        side = 8 if tiny else 32
        return rng.standard_normal((batch, 64, side, side)), rng.standard_normal((batch, 64, side, side))
    if name == "transformer":
        shape = (batch, 8 if tiny else TSEQ, D_MODEL)
        return rng.standard_normal(shape), rng.standard_normal(shape)
    steps = 4 if tiny else SEQ
    return rng.standard_normal((batch, steps, FEAT)), rng.integers(0, 10, batch)


class _Seq(nnx.Module):
    """RNN (LSTM or GRU) over the sequence, linear head on the last hidden state."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = (nnx.LSTM if kind == "lstm" else nnx.GRU)(FEAT, HIDDEN, batch_first=True)
        self.head = nnx.Linear(HIDDEN, 10)
        self.kind = kind

    def forward(self, x: Any) -> Any:
        _, state = self.rnn(x)
        h = state[0] if self.kind == "lstm" else state
        return self.head(h[0])

    def backward(self, grad_output: Any, *, input_grad: bool = True) -> Any:
        dh = self.head.backward(grad_output)
        return self.rnn.backward(None, dh[None], input_grad=input_grad)


def nnx_model(name: str) -> tuple[Any, Any, Any]:
    """(model, loss, optimizer) of a workload on the current nnx backend, float32."""
    if name == "mlp":
        model = nnx.Sequential(nnx.Linear(784, 512), nnx.ReLU(), nnx.Linear(512, 512), nnx.ReLU(), nnx.Linear(512, 10))
        return model, nnx.CrossEntropyLoss(), nnx.optim.Adam(model.parameters(), lr=1e-3)
    if name == "lenet":
        model = nnx.Sequential(
            nnx.Conv2d(1, 6, 5, padding=2), nnx.ReLU(), nnx.MaxPool2d(2), nnx.Conv2d(6, 16, 5), nnx.ReLU(),
            nnx.MaxPool2d(2), nnx.Flatten(), nnx.Linear(400, 120), nnx.ReLU(), nnx.Linear(120, 84), nnx.ReLU(),
            nnx.Linear(84, 10))
        return model, nnx.CrossEntropyLoss(), nnx.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if name == "resnet_block":
        model = _basic_block()(64, 64)
        return model, nnx.MSELoss(), nnx.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if name == "transformer":
        model = nnx.TransformerEncoderLayer(D_MODEL, NHEAD, FFN, dropout=0.0, batch_first=True)
        return model, nnx.MSELoss(), nnx.optim.Adam(model.parameters(), lr=1e-4)
    model = _Seq(name)
    return model, nnx.CrossEntropyLoss(), nnx.optim.Adam(model.parameters(), lr=1e-3)


def nnx_step(name: str, batch: int, tiny: bool = False, seed: int = 0) -> Callable[[], Any]:
    """One training step of workload ``name`` on the current backend (data put on the device once)."""
    nnx.manual_seed(seed)
    model, loss_fn, opt = nnx_model(name)
    x_host, y_host = _data(name, batch, np.random.default_rng(seed), tiny)
    x = nnx.asarray(x_host, dtype="float32")
    y = nnx.asarray(y_host, dtype="float32" if name in ("resnet_block", "transformer") else "int64")

    def step() -> Any:
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out, y)
        model.backward(loss_fn.backward(), input_grad=False)  # as nnx.fit: the data needs no gradient
        opt.step()
        return loss

    return step


def torch_step(name: str, batch: int, device: str = "cpu", tiny: bool = False, seed: int = 0) -> Callable[[], Any]:
    """The same step in PyTorch eager (autograd, default optimizers)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x_host, y_host = _data(name, batch, np.random.default_rng(seed), tiny)
    x = torch.tensor(x_host, dtype=torch.float32, device=device)
    y = torch.tensor(y_host, dtype=torch.float32 if name in ("resnet_block", "transformer") else torch.int64,
                     device=device)
    loss_fn: Any = nn.CrossEntropyLoss()
    if name == "mlp":
        model: Any = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    elif name == "lenet":
        model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84),
                              nn.ReLU(), nn.Linear(84, 10))
    elif name == "resnet_block":
        model = _torch_block(nn)
        loss_fn = nn.MSELoss()
    elif name == "transformer":
        model = nn.TransformerEncoderLayer(D_MODEL, NHEAD, FFN, dropout=0.0, batch_first=True)
        loss_fn = nn.MSELoss()
    else:
        rnn = (nn.LSTM if name == "lstm" else nn.GRU)(FEAT, HIDDEN, batch_first=True)
        head = nn.Linear(HIDDEN, 10)

        class Seq(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.rnn, self.head = rnn, head

            def forward(self, inp: Any) -> Any:
                _, state = self.rnn(inp)
                return self.head((state[0] if name == "lstm" else state)[0])

        model = Seq()
    model = model.to(device)
    if name in ("lenet", "resnet_block"):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-4 if name == "transformer" else 1e-3)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _torch_block(nn: Any) -> Any:
    """torchvision's BasicBlock(64, 64) without torchvision."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU()

        def forward(self, x: Any) -> Any:
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + x)

    return Block()
