"""ONNX export of MaxPool2d(return_indices=True) and MaxUnpool2d (issue 11): onnx.checker passes
and onnxruntime gives nnx's values and PyTorch's per-plane indices, on every backend, with a
dynamic batch size."""

from __future__ import annotations

import io

import numpy as np
import pytest

import nnx
import nnx.functional as F

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'nnx-backprop[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="exported files are checked by onnxruntime: pip install onnxruntime")
import nnx.onnx  # noqa: E402


def _run(proto_bytes, feeds):
    return ort.InferenceSession(proto_bytes, providers=["CPUExecutionProvider"]).run(None, feeds)


def _data(shape, seed=0):
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n).reshape(shape) / 7.0).astype(np.float32)


@pytest.mark.parametrize("cfg", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                 dict(kernel_size=2, dilation=2)], ids=["k2", "k3s2p1-ceil", "k2d2"])
def test_max_pool_with_indices_exports(backend, cfg):
    pool = nnx.MaxPool2d(**cfg, return_indices=True).eval()
    buf = io.BytesIO()
    proto = nnx.onnx.export(pool, nnx.asarray(_data((2, 3, 7, 6))), buf, input_names=["input"],
                            output_names=["y", "indices"], dynamic_axes={"input": {0: "batch"}})
    onnx.checker.check_model(proto, full_check=True)
    for n in (2, 4):
        x = _data((n, 3, 7, 6), seed=n)
        got_y, got_idx = _run(buf.getvalue(), {"input": x})
        want_y, want_idx = pool(nnx.asarray(x))
        np.testing.assert_array_equal(got_y, nnx.to_numpy(want_y))
        np.testing.assert_array_equal(got_idx, nnx.to_numpy(want_idx))


@pytest.mark.parametrize("output_size", [None, (7, 5)])
def test_max_unpool_exports(backend, output_size):
    import inspect

    if output_size is not None and "kwargs" not in inspect.signature(nnx.onnx.GraphBuilder.convert).parameters:
        pytest.skip("passing output_size to a converter needs GraphBuilder.convert(..., **kwargs) (on main)")
    unpool = nnx.MaxUnpool2d(2)
    shape = (2, 3, 6, 4) if output_size is None else (2, 3, 7, 5)

    def pooled(n, seed):
        return F.max_pool2d(nnx.asarray(_data((n,) + shape[1:], seed)), 2, return_indices=True)

    class Unpool(nnx.Module):  # the forward's output_size fixed, as an exported graph needs
        def __init__(self):
            super().__init__()
            self.unpool = unpool

        def forward(self, input, indices):
            return self.unpool(input, indices, output_size=output_size)

    @nnx.onnx.register_converter(Unpool)
    def _convert(g, module, inputs):
        return g.convert(module.unpool, inputs, **({} if output_size is None else {"output_size": output_size}))

    model = Unpool().eval()
    buf = io.BytesIO()
    proto = nnx.onnx.export(model, pooled(2, 0), buf, input_names=["y", "indices"], output_names=["out"],
                            dynamic_axes={"y": {0: "batch"}, "indices": {0: "batch"}, "out": {0: "batch"}})
    onnx.checker.check_model(proto, full_check=True)
    for n in (2, 5):
        y, idx = pooled(n, n)
        (got,) = _run(buf.getvalue(), {"y": nnx.to_numpy(y), "indices": nnx.to_numpy(idx)})
        np.testing.assert_array_equal(got, nnx.to_numpy(model(y, idx)))


def test_unbatched_export_is_refused_clearly(backend):
    with pytest.raises(nnx.onnx.UnsupportedLayerError, match=r"MaxPool2d needs a batched \(N, C, H, W\) example"):
        nnx.onnx.export(nnx.MaxPool2d(2, return_indices=True).eval(), nnx.asarray(_data((3, 4, 4))), io.BytesIO())
