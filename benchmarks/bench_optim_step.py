"""One optimizer step on NumPy, per parameter against one host-kernel run per parameter group
(``Backend.multi_tensor_kinds``), at 1 and 2 threads, alternated in one process.

Parameter sets: ``lenet5`` (62 K parameters in 10 tensors, bench_cnn.py's model) and ``convnet``
(4.4 M in 10: four 3x3 convolutions 64 -> 128 -> 256 -> 512 -> 512 and a 512 -> 1000 layer).
Optimizers: SGD with momentum 0.9 and weight decay 1e-4, Adam. Gradients are fixed arrays, so the
step is timed alone (in a training step its arrays come from the backward, in or out of cache).

Usage: ``python benchmarks/bench_optim_step.py [--rounds 5]``; prints one JSON line per case (ms
per step, medians over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import timeit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _model(name: str):
    import nnx

    if name == "lenet5":
        import bench_cnn

        return bench_cnn.nnx_lenet()
    return nnx.Sequential(nnx.Conv2d(64, 128, 3), nnx.Conv2d(128, 256, 3), nnx.Conv2d(256, 512, 3),
                          nnx.Conv2d(512, 512, 3), nnx.Linear(512, 1000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import nnx
    import nnx_backends.numpy_fused as NF

    from common import threads

    nnx.set_backend("numpy")
    kinds = NF.NumpyFused.multi_tensor_kinds
    for name in ("lenet5", "convnet"):
        for opt_name in ("sgd", "adam"):
            nnx.manual_seed(0)
            model = _model(name)
            params = list(model.parameters())
            if opt_name == "sgd":
                opt = nnx.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
            else:
                opt = nnx.optim.Adam(params, lr=1e-3)
            for p in params:
                p.grad = np.full(p.data.shape, 1e-3, dtype=p.data.dtype)
            number = 200 if name == "lenet5" else 10
            for n in (1, 2):
                with threads(n):
                    times: dict[str, list[float]] = {"group": [], "per_parameter": []}
                    opt.step()
                    for _ in range(args.rounds):
                        for mode in times:
                            NF.NumpyFused.multi_tensor_kinds = kinds if mode == "group" else (lambda self: ())
                            times[mode].append(timeit.timeit(opt.step, number=number) / number * 1e3)
                    NF.NumpyFused.multi_tensor_kinds = kinds
                medians = {f"{k}_ms": round(statistics.median(v), 4) for k, v in times.items()}
                print(json.dumps({"params": name, "n_params": sum(p.data.size for p in params), "optimizer": opt_name,
                                  "threads": n, **medians}), flush=True)


if __name__ == "__main__":
    main()
