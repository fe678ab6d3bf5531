"""The TensorBoard callback: a run of fit written as event files, read back record by record (TFRecord
framing parsed here, events decoded with tensorboardX's protobuf classes)."""

from __future__ import annotations

import glob
import struct

import numpy as np
import pytest

import nnx

pytest.importorskip("tensorboardX", reason="optional extra: pip install 'nnx-backprop[tensorboard]'")


def _read_events(log_dir):
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(glob.glob(f"{log_dir}/events.out.tfevents.*")):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            pos += 12  # length and its CRC
            ev = event_pb2.Event()
            ev.ParseFromString(data[pos:pos + length])
            events.append(ev)
            pos += length + 4  # payload and its CRC
    return events


def test_fit_writes_scalars_histograms_and_text(tmp_path, backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    train = nnx.data.DataLoader((x, y), batch_size=16)
    val = nnx.data.DataLoader((x, y), batch_size=32)
    model = nnx.Sequential(nnx.Linear(4, 8), nnx.ReLU(), nnx.Linear(8, 2))
    opt = nnx.optim.SGD(model.parameters(), lr=0.1)
    sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    tb = nnx.callbacks.TensorBoard(tmp_path, log_every_n_steps=2, histogram_every_n_steps=4)
    nnx.fit(model, nnx.CrossEntropyLoss(), opt, train, epochs=3, val_loader=val, metrics=["accuracy"],
            scheduler=sched, callbacks=[tb], quiet=True)
    events = _read_events(tmp_path)
    scalars: dict[str, list[tuple[int, float]]] = {}
    histos, texts = set(), []
    for ev in events:
        for v in ev.summary.value:
            if v.HasField("histo"):
                histos.add((v.tag, ev.step))
                assert v.histo.num > 0
            elif v.HasField("tensor") and v.tensor.string_val:
                texts.append(v.tensor.string_val[0].decode())
            elif v.HasField("simple_value") or v.tag.startswith(("train/", "epoch/")):
                scalars.setdefault(v.tag, []).append((ev.step, v.simple_value))
    # 4 batches per epoch, 3 epochs: 12 steps, a point every 2
    assert [s for s, _ in scalars["train/loss"]] == [2, 4, 6, 8, 10, 12]
    assert [s for s, _ in scalars["epoch/loss"]] == [1, 2, 3]
    assert {"epoch/val_loss", "epoch/val_accuracy", "epoch/accuracy"} <= set(scalars)
    lrs = [v for _, v in scalars["train/lr"]]
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.025)  # the schedule, as the optimizer saw it
    assert all(np.isfinite(v) for _, v in scalars["train/loss"])
    assert {("weights/0.weight", 4), ("grads/0.weight", 4), ("grads/2.bias", 12)} <= histos
    assert any("Linear(in_features=4, out_features=8" in t for t in texts)
    # after the run the optimizer's step is the scheduler's counter again, not the histogram wrapper
    assert "_count_optimizer_steps" in opt.__dict__["step"].__qualname__


def test_missing_tensorboardx_message(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "tensorboardX":
            raise ImportError("no")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"nnx-backprop\[tensorboard\]"):
        nnx.callbacks.TensorBoard("runs")
