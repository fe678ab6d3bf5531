"""Run under ``mpiexec -n 2``: DDP on 2 ranks (half of every global batch each) == 1 rank on the
whole batch. Each rank also trains the single-process reference itself, so one launch checks
everything. With the argument ``direct`` the in-place (unpacked) all-reduce is forced.
Prints ``CHECK <name> OK <max rel diff>`` or ``CHECK <name> FAIL ...`` on rank 0."""
from __future__ import annotations

import copy
import sys

import numpy as np

import nnx
from nnx import distributed as dist
from nnx.parallel import DistributedDataParallel

STEPS = 4
#: ``direct`` on the command line: every gradient this step created is all-reduced in place as its
#: own message (the large-gradient path, forced for these small models)
DIRECT = "direct" in sys.argv


class LSTMHead(nnx.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nnx.LSTM(5, 8, batch_first=True)
        self.fc = nnx.Linear(8, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        self._shape = out.shape
        return self.fc(out[:, -1, :])

    def backward(self, dy, *, input_grad=True):
        xp = nnx.get_backend().xp
        d_last = self.fc.backward(dy)
        n, t, h = self._shape
        d_out = xp.concat([xp.zeros((n, t - 1, h), dtype=d_last.dtype), xp.reshape(d_last, (n, 1, h))], axis=1)
        return self.lstm.backward(d_out, input_grad=input_grad)


def make(kind):
    # the conv before BatchNorm has no bias: its exact gradient is 0 and Adam would amplify rounding noise
    if kind == "mlp":
        return nnx.Sequential(nnx.Linear(6, 16), nnx.Tanh(), nnx.Linear(16, 3)), (6,)
    if kind == "cnn_syncbn":
        m = nnx.Sequential(nnx.Conv2d(2, 4, 3, padding=1, bias=False), nnx.BatchNorm2d(4), nnx.ReLU(),
                           nnx.Flatten(), nnx.Linear(4 * 5 * 5, 3))
        return m, (2, 5, 5)
    return LSTMHead(), (4, 5)


def flat_params(model):
    return {k: np.asarray(nnx.get_backend().to_numpy(v)) for k, v in model.state_dict().items()}


def run(kind, opt_name, dtype):
    nnx.set_default_dtype(dtype)
    nnx.manual_seed(123)
    model, shape = make(kind)
    ref = copy.deepcopy(model)
    if kind == "cnn_syncbn":
        model = nnx.SyncBatchNorm.convert_sync_batchnorm(model)
    rank, world = dist.get_rank(), dist.get_world_size()
    ddp = DistributedDataParallel(model, bucket_cap_mb=0.0005)   # several buckets even for tiny models
    make_opt = (lambda ps: nnx.optim.SGD(ps, lr=0.1, momentum=0.9)) if opt_name == "sgd" else \
        (lambda ps: nnx.optim.Adam(ps, lr=0.01))
    opt, ref_opt = make_opt(ddp.parameters()), make_opt(ref.parameters())
    loss_fn, ref_loss_fn = nnx.CrossEntropyLoss(), nnx.CrossEntropyLoss()
    rng = np.random.default_rng(7)
    gbatch = 8
    for _ in range(STEPS):
        x = rng.standard_normal((gbatch, *shape)).astype(dtype)
        y = rng.integers(0, 3, gbatch)
        per = gbatch // world
        xs, ys = nnx.asarray(x[rank * per:(rank + 1) * per]), nnx.asarray(y[rank * per:(rank + 1) * per])
        loss_fn(ddp(xs), ys)
        ddp.backward(loss_fn.backward(), input_grad=False)
        if DIRECT and kind == "mlp" and ddp.last_messages != len(list(ddp.parameters())):
            return f"direct path not taken: {ddp.last_messages} messages"
        grads = [nnx.get_backend().to_numpy(p.grad) for p in ddp.parameters()]
        every = dist.all_gather_object(grads)
        for g0, g1 in zip(every[0], every[-1], strict=True):
            if not np.array_equal(g0, g1):
                return "gradients differ across ranks"
        opt.step()
        opt.zero_grad()
        ref_loss_fn(ref(nnx.asarray(x)), nnx.asarray(y))
        ref.backward(ref_loss_fn.backward(), input_grad=False)
        ref_opt.step()
        ref_opt.zero_grad()
    a, b = flat_params(ddp.module), flat_params(ref)
    tol = 1e-6 if dtype == "float32" else 1e-12
    worst = 0.0
    for k in b:
        scale = max(float(np.max(np.abs(b[k]))), 1e-30)
        worst = max(worst, float(np.max(np.abs(a[k] - b[k]))) / scale)
    return None if worst <= tol else f"max relative difference {worst:.3g} > {tol}", worst


def main() -> int:
    dist.init()
    if DIRECT:
        nnx.parallel._DIRECT_BYTES = 0
    failures = 0
    for kind in ("mlp", "cnn_syncbn", "lstm"):
        for opt_name in ("sgd", "adam"):
            for dtype in ("float32", "float64"):
                res = run(kind, opt_name, dtype)
                err, worst = res if isinstance(res, tuple) else (res, float("nan"))
                name = f"{kind}-{opt_name}-{dtype}"
                if dist.get_rank() == 0:
                    print(f"CHECK {name} {'OK' if err is None else 'FAIL ' + err} {worst:.3g}", flush=True)
                failures += err is not None
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
