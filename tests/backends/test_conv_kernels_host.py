"""The CUDA ``nnx_im2col`` / ``nnx_col2im`` kernels (``cuda_kernels.ROW_KERNELS``) and the CuPy
adapter's ``im2col``/``col2im`` (``cupy_fused.py``), checked on the CPU.

The kernel source is compiled as host C++ (``tests/cuda_host_helpers.ROW_HARNESS`` turns the CUDA
thread indices into loop variables) and driven through a stand-in ``cupy`` module, so the adapter's
argument order, launch geometry and output shapes are exercised exactly as on a GPU; the results are
compared with the pure-standard references of ``backends/im2col.py`` on NumPy in float32 and float64.
The NVRTC compile test (``test_cuda_compile.py``) compiles the same source for the GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import subprocess
import types

import numpy as np
import pytest
from cuda_host_helpers import ROW_HARNESS

import nnx_backends
from nnx_backends import cuda_kernels as K
from nnx_backends import im2col as C
from nnx_backends.cupy_fused import _MODULE, CupyFused

WRAPPERS = r"""
typedef TYPE T;
static void grid(long long total, void (*one)(void*), void* ctx) {
    blockDim.x = 256;
    for (long long b = 0; b * 256 < total; ++b) {
        blockIdx.x = b;
        for (long long t = 0; t < 256; ++t) { threadIdx.x = t; one(ctx); }
    }
}
struct Args { const T* in; long long total, h, w, oh, ow, kh, kw, sh, sw, dh, dw, top, left; double fill; T* out; };
static void one_im2col(void* p) { Args* a = (Args*)p;
    nnx_im2col<T>(a->in, a->total, a->h, a->w, a->oh, a->ow, a->kh, a->kw, a->sh, a->sw, a->dh, a->dw, a->top, a->left,
                  a->fill, a->out); }
static void one_col2im(void* p) { Args* a = (Args*)p;
    nnx_col2im<T>(a->in, a->total, a->h, a->w, a->oh, a->ow, a->kh, a->kw, a->sh, a->sw, a->dh, a->dw, a->top, a->left,
                  a->out); }
extern "C" void host_im2col(const T* x, long long total, long long h, long long w, long long oh, long long ow,
                            long long kh, long long kw, long long sh, long long sw, long long dh, long long dw,
                            long long top, long long left, double fill, T* cols) {
    Args a = {x, total, h, w, oh, ow, kh, kw, sh, sw, dh, dw, top, left, fill, cols};
    grid(total, one_im2col, &a);
}
extern "C" void host_col2im(const T* cols, long long total, long long h, long long w, long long oh, long long ow,
                            long long kh, long long kw, long long sh, long long sw, long long dh, long long dw,
                            long long top, long long left, T* dx) {
    Args a = {cols, total, h, w, oh, ow, kh, kw, sh, sw, dh, dw, top, left, 0.0, dx};
    grid(total, one_col2im, &a);
}
"""
ARGS = {"nnx_im2col": "p" + "q" * 13 + "dp", "nnx_col2im": "p" + "q" * 13 + "p"}
CODES = {"p": ctypes.c_void_p, "q": ctypes.c_longlong, "d": ctypes.c_double}


class _RawModule:
    def __init__(self, libs, **kw):
        self.libs = libs

    def get_function(self, expr):
        name, ctype = expr[:-1].split("<")
        lib = self.libs["float32" if ctype == "float" else "float64"]
        host = getattr(lib, name.replace("nnx_", "host_"))
        codes = ARGS[name]

        def launch(grid, block, args):
            assert len(args) == len(codes), f"{name}: {len(args)} arguments, the kernel takes {len(codes)}"
            assert grid[0] * block[0] >= args[1], f"{name}: the launch covers fewer threads than elements"
            call = []
            for code, a in zip(codes, args, strict=True):
                if code == "p":
                    assert isinstance(a, np.ndarray) and a.flags.c_contiguous, f"{name}: pointer arg not contiguous"
                    call.append(a.ctypes.data_as(ctypes.c_void_p))
                else:
                    call.append(CODES[code](a))
            host(*call)

        return launch


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++/clang++) to build the kernels for the host")
    tmp = tmp_path_factory.mktemp("convkernels")
    libs = {}
    for dt, ct in (("float32", "float"), ("float64", "double")):
        (tmp / f"{dt}.cpp").write_text(ROW_HARNESS + K.PREAMBLE + K.ROW_KERNELS + WRAPPERS.replace("TYPE", ct))
        subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(tmp / f"{dt}.so"), str(tmp / f"{dt}.cpp")],
                       check=True)
        libs[dt] = ctypes.CDLL(str(tmp / f"{dt}.so"))
    cp = types.SimpleNamespace(RawModule=lambda **k: _RawModule(libs, **k), empty=np.empty,
                               ascontiguousarray=np.ascontiguousarray, dtype=np.dtype)
    adapter = CupyFused()
    adapter._cp = cp
    adapter.device = contextlib.nullcontext()
    saved = list(_MODULE)
    _MODULE.clear()
    yield adapter
    _MODULE[:] = saved


GEOMETRIES = [  # (shape, kernel, stride, dilation, (top, left), out)
    ((2, 3, 6, 5), (3, 3), (1, 1), (1, 1), (1, 1), (6, 5)),
    ((1, 2, 7, 6), (2, 3), (2, 1), (1, 2), (0, 1), (3, 2)),
    ((2, 2, 5, 5), (2, 2), (1, 1), (1, 1), (0, 0), (5, 5)),
    ((1, 1, 9, 8), (3, 2), (3, 2), (2, 1), (2, 0), (4, 4)),
    ((3, 4, 4, 4), (1, 1), (2, 2), (1, 1), (0, 0), (2, 2)),
    ((2, 6, 28, 28), (5, 5), (1, 1), (1, 1), (2, 2), (28, 28)),   # LeNet's first layer (more than one block)
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=["same", "s21-d12", "same-even", "past-edge", "1x1-s2", "lenet"])
def test_cuda_im2col_col2im_kernels_match_the_reference(fake, geom, dtype):
    shape, kernel, stride, dilation, pads, out = geom
    ref = nnx_backends.get("numpy")
    r = np.random.default_rng(0)
    x = r.standard_normal(shape).astype(dtype)
    for fill in (0.0, -np.inf):
        got = fake.im2col(x, kernel, stride, dilation, pads, out, fill)
        want = C.im2col(ref, x, kernel, stride, dilation, pads, out, fill)
        assert got.shape == want.shape and got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want)
    cols = r.standard_normal(want.shape).astype(dtype)
    got = fake.col2im(cols, shape, kernel, stride, dilation, pads, out)
    want = C.col2im(ref, cols, shape, kernel, stride, dilation, pads, out)
    assert got.shape == shape and got.dtype == np.dtype(dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_cuda_col2im_accepts_a_strided_view(fake):
    """The adapter makes its input contiguous (a transposed column matrix is a view)."""
    cols = np.random.default_rng(1).standard_normal((4, 2 * 9, 1)).transpose(2, 1, 0)  # (1, 18, 4), not contiguous
    want = C.col2im(nnx_backends.get("numpy"), np.ascontiguousarray(cols), (1, 2, 3, 3), (3, 3), (1, 1), (1, 1),
                    (1, 1), (2, 2))
    np.testing.assert_allclose(fake.col2im(cols, (1, 2, 3, 3), (3, 3), (1, 1), (1, 1), (1, 1), (2, 2)), want,
                               rtol=1e-12)
