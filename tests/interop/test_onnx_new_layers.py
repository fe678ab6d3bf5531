"""nnx.onnx.export of Conv3d (every padding_mode), the 1-D/3-D and adaptive pools, InstanceNorm and
RMSNorm: onnx.checker passes and onnxruntime (CPU) agrees with nnx to 1e-5, on every backend, at two
batch sizes."""

from __future__ import annotations

import io

import numpy as np
import pytest

import nnx

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'nnx-backprop[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="exported files are checked by onnxruntime: pip install onnxruntime")
import nnx.onnx  # noqa: E402

from helpers import randomise  # noqa: E402


def _normal(*shape, seed=1):
    return np.random.default_rng(seed + sum(shape)).normal(size=shape).astype(np.float32)


def _check(model, shape, sizes=(2, 3), opset=17, dynamic=True, batch_axis=0):
    """Export at batch ``sizes[0]``; onnxruntime at every size equals nnx (rtol = atol = 1e-5)."""
    def at(n):
        s = list(shape)
        s[batch_axis] = n
        return _normal(*s)
    buf = io.BytesIO()
    proto = nnx.onnx.export(model, nnx.asarray(at(sizes[0])), buf, opset_version=opset,
                            dynamic_axes={"input": {batch_axis: "batch"}, "output": {batch_axis: "batch"}}
                            if dynamic else None)
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in sizes if dynamic else sizes[:1]:
        x = at(n)
        (got,) = sess.run(None, {"input": x})
        want = nnx.to_numpy(model(nnx.asarray(x)))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return proto


def _ops(proto) -> set[str]:
    return {node.op_type for node in proto.graph.node}


# ----------------------------------------------------------------------------- Conv3d
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv3d_padding_modes(backend, mode):
    conv = nnx.Conv3d(2, 4, (3, 2, 3), stride=(1, 2, 1), padding=(1, 1, 2), padding_mode=mode)
    _check(randomise(conv), (2, 2, 5, 6, 7))


def test_conv3d_same_dilated_groups_nobias(backend):
    conv = nnx.Conv3d(4, 6, 3, padding="same", dilation=(1, 2, 1), groups=2, bias=False)
    proto = _check(randomise(conv), (2, 4, 5, 6, 5))
    (node,) = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert [a.ints for a in node.attribute if a.name == "kernel_shape"][0] == [3, 3, 3]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv1d_conv2d_padding_modes(backend, mode):
    _check(randomise(nnx.Conv1d(3, 4, 3, padding=2, padding_mode=mode)), (2, 3, 9))
    _check(randomise(nnx.Conv2d(3, 4, (3, 4), padding="same", padding_mode=mode)), (2, 3, 6, 7))


# ----------------------------------------------------------------------------- 1-D and 3-D pools
_POOLS = [
    ("max1d", lambda: nnx.MaxPool1d(3, stride=2, padding=1), (2, 3, 11)),
    ("max1d_ceil_dilated", lambda: nnx.MaxPool1d(2, stride=2, dilation=2, ceil_mode=True), (2, 3, 10)),
    ("max3d", lambda: nnx.MaxPool3d(2), (2, 2, 4, 6, 4)),
    ("max3d_pad_ceil", lambda: nnx.MaxPool3d((3, 2, 3), stride=2, padding=(1, 0, 1), ceil_mode=True),
     (2, 2, 7, 6, 8)),
    ("max3d_dilated", lambda: nnx.MaxPool3d(2, stride=1, dilation=(2, 1, 2)), (2, 2, 5, 4, 5)),
    ("avg1d", lambda: nnx.AvgPool1d(3, stride=2), (2, 3, 11)),
    ("avg1d_pad_exclude", lambda: nnx.AvgPool1d(3, stride=2, padding=1, count_include_pad=False), (2, 3, 10)),
    ("avg1d_pad_include", lambda: nnx.AvgPool1d(4, stride=3, padding=2), (2, 3, 10)),
    ("avg1d_ceil", lambda: nnx.AvgPool1d(3, stride=2, ceil_mode=True), (2, 3, 10)),
    ("avg3d", lambda: nnx.AvgPool3d(2), (2, 2, 4, 6, 4)),
    ("avg3d_pad_exclude", lambda: nnx.AvgPool3d(3, stride=2, padding=1, count_include_pad=False),
     (2, 2, 6, 5, 7)),
    ("avg3d_ceil", lambda: nnx.AvgPool3d((3, 2, 3), stride=2, ceil_mode=True), (2, 2, 8, 6, 8)),
    ("avg3d_divisor", lambda: nnx.AvgPool3d(2, divisor_override=5), (2, 2, 4, 4, 6)),
]


@pytest.mark.parametrize("name,factory,shape", _POOLS, ids=[p[0] for p in _POOLS])
def test_pools_1d_3d(backend, name, factory, shape):
    _check(factory().eval(), shape)


def test_avg_pool3d_divisor_with_ceil_mode_is_refused(backend):
    with pytest.raises(nnx.onnx.UnsupportedLayerError, match="AvgPool3d with divisor_override"):
        nnx.onnx.export(nnx.AvgPool3d(2, ceil_mode=True, divisor_override=3).eval(),
                        nnx.asarray(_normal(1, 1, 5, 5, 5)), io.BytesIO())


# ----------------------------------------------------------------------------- adaptive pools
_ADAPTIVE = [
    ("avg1d_global", lambda: nnx.AdaptiveAvgPool1d(1), (2, 3, 7), "GlobalAveragePool"),
    ("avg1d_divides", lambda: nnx.AdaptiveAvgPool1d(4), (2, 3, 12), "AveragePool"),
    ("avg1d_overlapping", lambda: nnx.AdaptiveAvgPool1d(3), (2, 3, 7), "ReduceMean"),
    ("avg1d_upsampling", lambda: nnx.AdaptiveAvgPool1d(9), (2, 3, 5), "ReduceMean"),
    ("avg2d_overlapping", lambda: nnx.AdaptiveAvgPool2d(3), (2, 3, 5, 5), "ReduceMean"),
    ("avg2d_mixed", lambda: nnx.AdaptiveAvgPool2d((2, 3)), (2, 3, 6, 7), "ReduceMean"),
    ("max2d_global", lambda: nnx.AdaptiveMaxPool2d(1), (2, 3, 5, 7), "GlobalMaxPool"),
    ("max2d_divides", lambda: nnx.AdaptiveMaxPool2d((2, 3)), (2, 3, 8, 9), "MaxPool"),
    ("max2d_overlapping", lambda: nnx.AdaptiveMaxPool2d((3, 4)), (2, 3, 7, 10), "ReduceMax"),
    ("max2d_none", lambda: nnx.AdaptiveMaxPool2d((None, 3)), (2, 3, 5, 7), "ReduceMax"),
]


@pytest.mark.parametrize("name,factory,shape,op", _ADAPTIVE, ids=[a[0] for a in _ADAPTIVE])
@pytest.mark.parametrize("opset", [17, 18])
def test_adaptive_pools(backend, name, factory, shape, op, opset):
    proto = _check(factory().eval(), shape, opset=opset)
    assert op in _ops(proto)


# ----------------------------------------------------------------------------- InstanceNorm, RMSNorm
_NORMS = [
    ("in1d", lambda: nnx.InstanceNorm1d(3), (2, 3, 7), "InstanceNormalization"),
    ("in1d_affine", lambda: nnx.InstanceNorm1d(3, affine=True, eps=1e-3), (2, 3, 7), "InstanceNormalization"),
    ("in2d", lambda: nnx.InstanceNorm2d(4), (2, 4, 5, 6), "InstanceNormalization"),
    ("in2d_affine", lambda: nnx.InstanceNorm2d(4, affine=True), (2, 4, 5, 6), "InstanceNormalization"),
    ("in1d_running", lambda: nnx.InstanceNorm1d(3, track_running_stats=True), (2, 3, 7), "BatchNormalization"),
    ("in2d_running_affine", lambda: nnx.InstanceNorm2d(4, affine=True, track_running_stats=True), (2, 4, 5, 6),
     "BatchNormalization"),
]


@pytest.mark.parametrize("name,factory,shape,op", _NORMS, ids=[a[0] for a in _NORMS])
def test_instance_norm(backend, name, factory, shape, op):
    proto = _check(randomise(factory()), shape)
    assert op in _ops(proto)


def test_instance_norm_running_stats_are_the_trained_ones(backend):
    """Train a few steps so the running statistics move away from 0/1, then export in eval mode."""
    model = nnx.InstanceNorm2d(3, affine=True, track_running_stats=True)
    model.train()
    for seed in range(3):
        model(nnx.asarray(_normal(2, 3, 4, 5, seed=seed) * 2.0 + 1.0))
    assert not np.allclose(nnx.to_numpy(model.running_mean), 0.0)
    _check(model.eval(), (2, 3, 4, 5))


@pytest.mark.parametrize("kind", ["InstanceNorm1d", "InstanceNorm1d_running"])
def test_instance_norm_unbatched(backend, kind):
    model = randomise(nnx.InstanceNorm1d(3, affine=True, track_running_stats=kind.endswith("running")))
    _check(model, (3, 8), sizes=(3,), dynamic=False)  # (C, L): no batch axis


_RMS = [
    ("last_axis", lambda: nnx.RMSNorm(6), (2, 4, 6)),
    ("two_axes_eps", lambda: nnx.RMSNorm([4, 6], eps=1e-3), (2, 4, 6)),
    ("no_affine", lambda: nnx.RMSNorm(6, elementwise_affine=False), (2, 6)),
]


@pytest.mark.parametrize("name,factory,shape", _RMS, ids=[r[0] for r in _RMS])
@pytest.mark.parametrize("opset", [13, 18, 23])
def test_rms_norm(backend, name, factory, shape, opset):
    if opset > onnx.defs.onnx_opset_version():
        pytest.skip(f"the installed onnx supports opset {onnx.defs.onnx_opset_version()} only")
    proto = _check(randomise(factory()), shape, opset=opset)
    assert ("RMSNormalization" in _ops(proto)) == (opset >= 23)


def test_rms_norm_default_eps_matters(backend):
    """eps=None is float32's machine epsilon: an all-zero row gives 0, not NaN."""
    model = nnx.RMSNorm(4).eval()
    buf = io.BytesIO()
    nnx.onnx.export(model, nnx.asarray(np.zeros((2, 4), np.float32)), buf)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 4), np.float32)
    x[1] = 1e-4
    (got,) = sess.run(None, {"input": x})
    np.testing.assert_allclose(got, nnx.to_numpy(model(nnx.asarray(x))), rtol=1e-5, atol=1e-5)
    assert np.isfinite(got).all()
