"""DataLoader worker processes: batches/s of ``nnx.data.DataLoader`` and ``torch.utils.data.DataLoader``.

The dataset does real CPU work per sample: a NumPy augmentation of a 28x28 image (pad, random
crop, random flip, gaussian noise, normalisation; about 0.1-0.3 ms). Both loaders read the same
dataset with the same settings (batch size, shuffle, num_workers 0, 1, 2); nnx places batches on
its NumPy backend, torch collates to CPU tensors. Two numbers per setting: a first epoch with
fresh workers (start-up included) and a steady-state epoch with ``persistent_workers=True``.

Usage: ``python benchmarks/bench_dataloader_workers.py [--samples 4096] [--batch-size 64] [--repeats 3]``.
Prints one JSON line per measurement (medians over repeats). On a shared 2-core machine the
numbers are noisy: read them as ratios measured side by side, not as absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import machine  # noqa: E402


class AugmentedImages:
    """``n`` fixed 28x28 grey images; ``__getitem__`` augments one with a per-call random draw."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images = rng.random((n, 28, 28), dtype=np.float32)
        self.labels = rng.integers(0, 10, n)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int):
        img = np.pad(self.images[i], 2, mode="reflect")
        dy, dx = np.random.randint(0, 5, size=2)
        img = img[dy:dy + 28, dx:dx + 28]
        if np.random.rand() < 0.5:
            img = img[:, ::-1]
        img = img + np.random.normal(0.0, 0.05, size=img.shape).astype(np.float32)
        img = np.clip(img, 0.0, 1.0)
        img = (img - img.mean()) / (img.std() + 1e-6)
        return img[None].astype(np.float32), int(self.labels[i])


def per_sample_ms(ds: AugmentedImages, k: int = 2000) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        ds[i % len(ds)]
    return (time.perf_counter() - t0) / k * 1e3


def epoch_rate(make_loader, persistent: bool) -> float:
    """Batches/s of one epoch: the first epoch of a fresh loader, or the second with persistent workers."""
    loader = make_loader()
    if persistent:
        for _ in loader:  # warm-up epoch: workers started
            pass
    t0 = time.perf_counter()
    n = 0
    for _ in loader:
        n += 1
    rate = n / (time.perf_counter() - t0)
    del loader
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    args = parser.parse_args()
    import nnx

    try:
        import torch
        import torch.utils.data as tud
        torch.set_num_threads(1)
    except ImportError:
        tud = None
    ds = AugmentedImages(args.samples)
    print(json.dumps({"bench": "dataloader_workers", "machine": machine(), "samples": args.samples,
                      "batch_size": args.batch_size, "per_sample_ms": round(per_sample_ms(ds), 4),
                      "note": "shared 2-core machine: noisy; compare rows measured side by side"}), flush=True)
    nnx.set_backend("numpy")
    for nw in args.workers:
        for persistent in ([False, True] if nw else [False]):
            def make_nnx(nw=nw, persistent=persistent):
                return nnx.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, seed=0, num_workers=nw,
                                           persistent_workers=persistent)

            def make_torch(nw=nw, persistent=persistent):
                return tud.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=nw,
                                      persistent_workers=persistent)
            row = {"num_workers": nw, "epoch": "steady (persistent workers)" if persistent else "first (fresh workers)"}
            rates: dict[str, list[float]] = {"nnx": [], "torch": []}
            for _ in range(args.repeats):  # interleaved, to share the machine's noise
                rates["nnx"].append(epoch_rate(make_nnx, persistent))
                if tud is not None:
                    rates["torch"].append(epoch_rate(make_torch, persistent))
            for name, vals in rates.items():
                if vals:
                    row[f"{name}_batches_per_s"] = round(statistics.median(vals), 1)
            if rates["torch"]:
                row["nnx_over_torch"] = round(row["nnx_batches_per_s"] / row["torch_batches_per_s"], 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
