import numpy as np

import nnx

from helpers import host, rand


def test_mlp_trains(backend):
    nnx.manual_seed(0)
    model = nnx.Sequential(nnx.Linear(4, 16), nnx.ReLU(), nnx.Linear(16, 3))
    x = rand(32, 4, dtype="float32")
    y = nnx.asarray(np.arange(32) % 3)
    loss_fn = nnx.CrossEntropyLoss()
    opt = nnx.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss = loss_fn(model(x), y)
        first = float(loss) if first is None else first
        model.backward(loss_fn.backward())
        opt.step()
        opt.zero_grad()
    assert float(loss) < 0.5 * first
    assert host(model(x)).dtype == np.float32
