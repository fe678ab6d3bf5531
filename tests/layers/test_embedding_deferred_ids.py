"""Embedding token ids out of range on a device backend: recorded on the device, raised at the next read.

The launch meter's backend stands in for a GPU here: its arrays are "not in host memory", so layers
take the path CuPy takes (no host read per step).
"""

from __future__ import annotations

import numpy as np
import pytest

import nnx


def _device():
    return nnx.launches.counting_backend()


def test_out_of_range_id_is_deferred_then_raised_with_the_layer_named():
    with nnx.use_backend(_device()):
        emb = nnx.Embedding(10, 4)
        emb(nnx.asarray(np.array([[1, 10]])))           # no host read: nothing raised yet
        with pytest.raises(IndexError, match=r"Embedding\(10, 4\).*\[0, 9\]"):
            emb.raise_deferred_errors()
        emb.raise_deferred_errors()                      # the flag was cleared by the read


def test_flag_accumulates_over_batches_and_negative_ids_count():
    with nnx.use_backend(_device()):
        model = nnx.Sequential(nnx.Embedding(5, 3), nnx.Flatten(), nnx.Linear(6, 2))
        model(nnx.asarray(np.array([[-1, 2]])))
        model(nnx.asarray(np.array([[0, 4]])))           # a later good batch does not clear it
        with pytest.raises(IndexError, match="Embedding"):
            model.raise_deferred_errors()                # found through the container
        model(nnx.asarray(np.array([[0, 4]])))
        model.raise_deferred_errors()                    # good ids only: nothing to raise


def test_check_costs_one_kernel_per_forward():
    with nnx.use_backend(_device()) as b:
        emb = nnx.Embedding(10, 4)
        ids = nnx.asarray(np.array([[1, 2, 3]]))
        emb(ids)                                         # first batch: the flag is created (1 reduction)
        with b.launch_meter() as layer:
            emb(ids)
        with b.launch_meter() as lookup:
            nnx.functional.embedding(ids, emb.weight.data)
    assert layer.total - lookup.total == 2              # the reduction and the running maximum


def test_fit_raises_at_the_log_step():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8, size=(16, 2))
    ids[5, 1] = 8                                        # out of range for Embedding(8, 3)
    y = rng.integers(0, 2, size=16)
    with nnx.use_backend(_device()):
        model = nnx.Sequential(nnx.Embedding(8, 3), nnx.Flatten(), nnx.Linear(6, 2))
        loader = nnx.data.DataLoader(nnx.data.TensorDataset(ids, y), batch_size=4)
        opt = nnx.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(IndexError, match=r"Embedding\(8, 3\)"):
            nnx.fit(model, nnx.CrossEntropyLoss(), opt, loader, epochs=1, log_every=2, verbose=False)


def test_out_of_range_ids_raise_on_every_backend(backend):
    emb = nnx.Embedding(10, 4, backend=backend)
    ids = nnx.asarray(np.array([[1, 10]]), backend=backend)
    with pytest.raises(IndexError, match=r"Embedding\(10, 4\)"):
        emb(ids)                                         # host memory: raised here, naming the id
        emb.raise_deferred_errors()                      # a GPU: recorded, raised at the read
    emb.raise_deferred_errors()                          # nothing left behind


def test_host_backends_raise_at_once_with_the_id(backend):
    if backend == "cupy":
        pytest.skip("a GPU defers the check (see the test above)")
    emb = nnx.Embedding(10, 4, backend=backend)
    with pytest.raises(IndexError, match="token id 10 is out of range"):
        emb(nnx.asarray(np.array([[1, 10]]), backend=backend))
