"""Every CuPy kernel of nnx compiles with NVRTC for float16, float32 and float64, without a GPU.

NVRTC is a library (the ``nvidia-cuda-nvrtc-cu12`` wheel, pulled in by ``cupy-cuda12x``); CuPy's
half-precision header needs CUDA's ``cuda_fp16.h`` (the ``nvidia-cuda-runtime-cu12`` wheel or a
CUDA toolkit). Skips with the reason when either is missing.
"""

from __future__ import annotations

import glob
import os

import pytest

from nnx_backends import cuda_kernels as K

DTYPES = ("float16", "float32", "float64")


def _nvrtc():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # ImportError, or the NVRTC library missing
        pytest.skip(f"NVRTC is not available here ({type(exc).__name__}: {exc}); pip install cupy-cuda12x")
    return nvrtc


def _include_dirs() -> list[str]:
    import cupy

    dirs = [os.path.join(os.path.dirname(cupy.__file__), "_core", "include")]
    candidates = []
    try:
        import nvidia.cuda_runtime as rt

        candidates += [os.path.join(p, "include") for p in rt.__path__]
    except ImportError:
        pass
    candidates += [os.path.join(os.environ.get("CUDA_PATH", "/usr/local/cuda"), "include")]
    candidates += sorted(glob.glob("/usr/local/cuda*/include"))
    for c in candidates:
        if os.path.exists(os.path.join(c, "cuda_fp16.h")):
            return dirs + [c]
    pytest.skip("CUDA's cuda_fp16.h was not found (pip install nvidia-cuda-runtime-cu12, or set CUDA_PATH)")


def _compile(nvrtc, src: str, name: str, exprs: tuple[str, ...] = ()) -> str:
    prog = nvrtc.createProgram(src, f"{name}.cu", [], [])
    for e in exprs:
        nvrtc.addNameExpression(prog, e)
    opts = ["-arch=compute_70", "-std=c++17"] + [f"-I{d}" for d in _include_dirs()]
    try:
        nvrtc.compileProgram(prog, opts)
    except Exception as exc:
        log = nvrtc.getProgramLog(prog)
        raise AssertionError(f"{name}: NVRTC failed: {exc}\n{log}\n--- source ---\n{src}") from None
    return nvrtc.getPTX(prog)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(K.ELEMENTWISE))
def test_elementwise_kernel_compiles(name, dtype):
    nvrtc = _nvrtc()
    ptx = _compile(nvrtc, K.standalone_source(name, dtype), name)
    assert f"nnx_{name}" in ptx.decode() if isinstance(ptx, bytes) else f"nnx_{name}" in ptx


def test_row_kernels_compile():
    nvrtc = _nvrtc()
    exprs = tuple(f"{n}<{K.cuda_type(t)}>" for n in K.ROW_KERNEL_NAMES for t in DTYPES)
    ptx = _compile(nvrtc, K.row_kernels_source(), "row_kernels", exprs)
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert text.count(".entry") == len(exprs)


def test_old_style_double_half_arithmetic_is_what_the_accumulator_avoids():
    """The compile test can fail: a body that mixes ``double`` and ``__half`` directly is rejected."""
    nvrtc = _nvrtc()
    src = ("#include <cuda_fp16.h>\nextern \"C\" __global__ void bad(__half* p, double s)"
           " { p[0] = s * p[0]; }\n")
    with pytest.raises(AssertionError, match="NVRTC failed"):
        _compile(nvrtc, src, "bad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", K.MULTI_TENSOR)
def test_multi_tensor_kernel_compiles(name, dtype):
    nvrtc = _nvrtc()
    ptx = _compile(nvrtc, K.multi_tensor_source(name, dtype), f"multi_{name}")
    assert f"nnx_multi_{name}" in (ptx.decode() if isinstance(ptx, bytes) else ptx)
