"""The first hour: a Parameter converts like its array, History.best counts epochs as the log does, the
example scripts share --backend/--device/--threads and end with one line and exit code 2 when the
backend cannot be used."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import nnx

from helpers import EXAMPLES, host

SCRIPTS = ["mlp_digits", "cnn_digits", "custom_backward", "residual_block", "fit_digits"]


def test_parameter_converts_like_its_array(backend):
    lin = nnx.Linear(3, 2, dtype="float64")
    expect = host(lin.weight.data)
    np.testing.assert_array_equal(nnx.to_numpy(lin.weight), expect)
    np.testing.assert_array_equal(np.asarray(lin.weight), expect)
    assert np.asarray(lin.weight, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(lin.weight.numpy(), expect)
    assert lin.weight.detach() is lin.weight.data


def test_history_best_counts_epochs_from_one():
    h = nnx.History()
    for e, v in enumerate([0.9, 0.5, 0.7]):
        h.append(e, {"val_loss": v, "val_accuracy": 1 - v})
    assert h.best("val_loss") == (2, 0.5)  # the log's "Epoch 2/3"
    assert h.best("val_accuracy") == (2, 0.5)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_cli(script):
    path = os.path.join(EXAMPLES, f"{script}.py")
    env = dict(os.environ, NNX_BACKEND="numpy")
    out = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--backend", "--device", "--threads"):
        assert flag in out.stdout
    text = " ".join(out.stdout.split("\n\n")[1].split())  # the description paragraph
    assert text.endswith((".", ")")), f"{script}: --help description is cut off: {text!r}"
    bad = subprocess.run([sys.executable, path, "--backend", "no_such_backend"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot use backend 'no_such_backend'" in lines[0], bad.stderr


def test_tape_warning_by_memory_held(backend):
    import warnings

    from nnx.module import TapeGrowthWarning

    model = nnx.Sequential(nnx.Linear(64, 64), nnx.ReLU())
    x = nnx.asarray(np.ones((256, 64)))  # 64 KiB of float32 per pass kept by each layer
    old = nnx.module.TAPE_WARNING_BYTES
    nnx.module.TAPE_WARNING_BYTES = 1 * 2**20
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(40):
                model(x)
        msgs = [str(w.message) for w in caught if issubclass(w.category, TapeGrowthWarning)]
        assert msgs, "no warning although 40 passes keep 2.5 MiB"
        # 16 passes of 64 KiB; 8 where Linear+ReLU run fused (the Linear's closure keeps its input and output)
        held = re.search(r"holds (\d+) recorded forward passes", msgs[0])
        assert held and int(held.group(1)) in (8, 16) and "MiB" in msgs[0] and "no_grad()" in msgs[0]
        model.clear_tape()
        with warnings.catch_warnings():  # one pass at a time, consumed: never a warning
            warnings.simplefilter("error")
            for _ in range(40):
                model(x)
                model.backward(nnx.asarray(np.ones((256, 64))))
    finally:
        nnx.module.TAPE_WARNING_BYTES = old
        model.clear_tape()


def test_summary_accepts_both_input_forms(backend):
    model = nnx.Sequential(nnx.Linear(5, 3), nnx.ReLU())
    a = nnx.summary(model, (5,), batch_size=4, print_fn=None)
    b = nnx.summary(model, input_size=(4, 5), print_fn=None)
    assert a["layers"] == b["layers"] and a["layers"][0][2] == (4, 3)
    conv = nnx.Sequential(nnx.Conv2d(1, 2, 3))
    assert nnx.summary(conv, input_size=(2, 1, 8, 8), print_fn=None)["layers"][0][2] == (2, 2, 6, 6)
    with pytest.raises(ValueError, match="excludes the batch dimension"):
        nnx.summary(conv, (2, 1, 8, 8), print_fn=None)  # torchinfo's form passed as input_shape
    with pytest.raises(TypeError, match="either input_shape"):
        nnx.summary(model, print_fn=None)
