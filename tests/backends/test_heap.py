"""backends/heap.py: the NumPy adapter keeps freed step buffers in the heap (glibc), opt-out by environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PROBE = """
import resource, numpy as np, nnx_backends as B
from nnx_backends import heap
B.get("numpy")
print(heap.keep_freed_memory())
def step():
    a = np.ones((1 << 21,), dtype=np.float32)   # 8 MiB: above glibc's default mmap threshold
    b = a * 2.0
    del a, b
step(); step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _probe(tune: str) -> tuple[bool, int]:
    env = dict(os.environ, NNX_MALLOC_TUNE=tune, PYTHONPATH=ROOT)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6")
                    and not os.path.exists("/lib64/libc.so.6") and not os.path.exists("/usr/lib64/libc.so.6"),
                    reason="the heap tuning applies to glibc on Linux only")
def test_freed_buffers_are_reused_without_page_faults_and_the_tuning_can_be_turned_off():
    applied, faults = _probe("1")
    assert applied
    assert faults < 200, f"{faults} page faults for 10 steps of two 8 MiB temporaries with the heap tuning on"
    applied_off, faults_off = _probe("0")
    assert not applied_off
    assert faults_off > 2 * faults + 1000, (faults_off, faults)  # glibc's default maps and unmaps them each step
