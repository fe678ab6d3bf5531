"""The example scripts share --backend/--device/--threads and end with one line and exit code 2 when the
backend cannot be used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import EXAMPLES

SCRIPTS = ["mlp_digits", "cnn_digits", "custom_backward", "residual_block", "fit_digits"]


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
