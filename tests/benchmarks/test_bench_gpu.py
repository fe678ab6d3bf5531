"""The GPU benchmark and the one-call GPU check work on a CPU: bench_gpu.py at tiny sizes on NumPy
against PyTorch CPU, and gpu_check.sh degrading to a clear "no GPU" report."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", os.path.join(ROOT, "benchmarks", "bench_gpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_gpu_tiny_on_numpy_against_torch_cpu(tmp_path, torch):
    out = tmp_path / "gpu.json"
    doc = _bench().main(["--backend", "numpy", "--device", "cpu", "--tiny", "--warmup", "1", "--repeats", "1",
                         "--workload", "mlp", "--workload", "lstm", "--workload", "resnet_block", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"] == doc["results"]
    assert [(r["workload"], r["batch"]) for r in doc["results"]] == [("mlp", 8), ("resnet_block", 2), ("lstm", 4)]
    for r in doc["results"]:
        assert r["nnx_ms"] > 0 and r["torch_ms"] > 0 and r["speedup"] > 0
    assert doc["torch_device"] == "cpu" and doc["versions"]["backend"] == "numpy"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_reports_no_gpu_on_a_cpu(tmp_path, torch):
    if nnx.available_backends().get("cupy") is True:
        pytest.skip("a usable GPU is present: gpu_check.sh would run the full check")
    env = dict(os.environ, PYTHON=sys.executable, NNX_SMOKE_ARGS="--workload mlp",
               NNX_SMOKE_OUT=str(tmp_path / "smoke.json"))
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no GPU: the cupy backend cannot run here: CuPy" in proc.stdout
    assert "no GPU; CPU smoke run passed" in proc.stdout
    assert json.loads((tmp_path / "smoke.json").read_text())["results"][0]["workload"] == "mlp"
