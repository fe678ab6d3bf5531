"""nnx.onnx.export: onnx.checker passes and onnxruntime (CPU) agrees with nnx, on every backend."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import nnx

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'nnx-backprop[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="exported files are checked by onnxruntime: pip install onnxruntime")
import nnx.onnx  # noqa: E402

from helpers import randomise  # noqa: E402

BATCH = {"input": {0: "batch"}, "output": {0: "batch"}}




def _run(path_or_bytes, feeds: dict) -> list:
    sess = ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _check(model, shape, other_batch=5, dynamic=BATCH, batch_axis=0, integer_high=None, rtol=1e-5, atol=1e-5):
    """Export on one batch size, run onnxruntime on another, compare with nnx (all outputs)."""
    rng = np.random.default_rng(1)

    def data(n):
        s = list(shape)
        if dynamic:
            s[batch_axis] = n
        if integer_high:
            return rng.integers(0, integer_high, s).astype(np.int64)
        return rng.normal(size=s).astype(np.float32)

    buf = io.BytesIO()
    out_names = None
    expected0 = model(nnx.asarray(data(shape[batch_axis])))
    n_out = len(nnx.onnx.builder._flatten(expected0))
    if n_out > 1:
        out_names = [f"out{i}" for i in range(n_out)]
        dynamic = {"input": dynamic["input"]} if dynamic else None
    proto = nnx.onnx.export(model, nnx.asarray(data(shape[batch_axis])), buf, input_names=["input"],
                            output_names=out_names, dynamic_axes=dynamic)
    onnx.checker.check_model(proto, full_check=True)
    for n in ([shape[batch_axis], other_batch] if dynamic else [shape[batch_axis]]):
        x = data(n)
        got = _run(buf.getvalue(), {"input": x})
        want = [nnx.to_numpy(y) for y in nnx.onnx.builder._flatten(model(nnx.asarray(x)))]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return proto


def _models():
    """(id, factory, input shape, kwargs of _check)."""
    L = [
        ("mlp", lambda: nnx.Sequential(nnx.Linear(6, 8), nnx.ReLU(), nnx.Linear(8, 3)), (4, 6), {}),
        ("linear_3d", lambda: nnx.Linear(6, 5), (2, 3, 6), {}),
        ("linear_nobias", lambda: nnx.Linear(6, 5, bias=False), (4, 6), {}),
        ("cnn", lambda: nnx.Sequential(nnx.Conv2d(2, 4, 3, padding=1), nnx.BatchNorm2d(4), nnx.ReLU(),
                                       nnx.MaxPool2d(2), nnx.Conv2d(4, 6, 3, stride=2, dilation=1, groups=2),
                                       nnx.AdaptiveAvgPool2d(1), nnx.Flatten(), nnx.Dropout(0.3), nnx.Linear(6, 3),
                                       nnx.LogSoftmax(dim=1)), (3, 2, 12, 12), {}),
        ("conv_same_dilated", lambda: nnx.Conv2d(3, 4, (3, 4), padding="same", dilation=2, bias=False),
         (2, 3, 9, 10), {}),
        ("conv_valid_groups", lambda: nnx.Conv2d(4, 8, 3, padding="valid", groups=4), (2, 4, 7, 7), {}),
        ("conv1d", lambda: nnx.Sequential(nnx.Conv1d(3, 5, 3, stride=2, padding=2, dilation=2), nnx.BatchNorm1d(5),
                                          nnx.GELU()), (2, 3, 17), {}),
        ("conv_transpose", lambda: nnx.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
         (2, 4, 5, 6), {}),
        ("pools", lambda: nnx.Sequential(nnx.MaxPool2d(3, stride=2, padding=1, dilation=1, ceil_mode=True),
                                         nnx.AvgPool2d(2, stride=1, padding=1, count_include_pad=False)),
         (2, 3, 10, 9), {}),
        ("avgpool_ceil", lambda: nnx.AvgPool2d(3, stride=2, ceil_mode=True), (2, 3, 10, 10), {}),
        ("avgpool_divisor", lambda: nnx.AvgPool2d(2, divisor_override=3), (2, 3, 8, 8), {}),
        ("maxpool_dilated", lambda: nnx.MaxPool2d(2, stride=1, dilation=2), (2, 3, 8, 8), {}),
        ("adaptive_2x3", lambda: nnx.AdaptiveAvgPool2d((2, 3)), (2, 3, 8, 9), {}),
        ("layernorm_groupnorm", lambda: nnx.Sequential(nnx.GroupNorm(2, 4), nnx.LayerNorm([5, 6])),
         (2, 4, 5, 6), {}),
        ("groupnorm_noaffine", lambda: nnx.GroupNorm(3, 6, affine=False), (2, 6, 4), {}),
        ("batchnorm1d_2d", lambda: nnx.Sequential(nnx.Linear(5, 4), nnx.BatchNorm1d(4)), (3, 5), {}),
        ("embedding", lambda: nnx.Sequential(nnx.Embedding(11, 4), nnx.Flatten(), nnx.Linear(12, 2)),
         (5, 3), {"integer_high": 11}),
        ("unflatten_flatten", lambda: nnx.Sequential(nnx.Linear(12, 24), nnx.Unflatten(1, (2, 3, 4)),
                                                     nnx.Flatten(2, 3), nnx.Identity()), (3, 12), {}),
        ("upsample_nearest", lambda: nnx.Upsample(scale_factor=2), (2, 3, 4, 5), {}),
        ("upsample_bilinear", lambda: nnx.Upsample(size=(7, 9), mode="bilinear", align_corners=False),
         (2, 3, 4, 5), {}),
        ("upsample_bilinear_corners", lambda: nnx.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
         (2, 3, 4, 5), {}),
        ("pixel_shuffle", lambda: nnx.Sequential(nnx.PixelUnshuffle(2), nnx.Conv2d(12, 12, 1), nnx.PixelShuffle(2)),
         (2, 3, 6, 8), {}),
        ("residual_parallel", lambda: nnx.Sequential(
            nnx.Residual(nnx.Sequential(nnx.Conv2d(3, 3, 3, padding=1), nnx.ReLU())),
            nnx.Parallel(nnx.Conv2d(3, 2, 1), nnx.Conv2d(3, 4, 1), merge="concat"),
            nnx.Residual(nnx.Conv2d(6, 4, 1), shortcut=nnx.Conv2d(6, 4, 1)),
            nnx.Parallel(nnx.Identity(), nnx.Tanh(), merge="add"),
            nnx.Parallel(nnx.Identity(), nnx.Sigmoid(), merge="mul"),
            nnx.Parallel(nnx.Identity(), nnx.ReLU(), merge="stack", dim=1)), (2, 3, 5, 5), {}),
    ]
    acts = [nnx.ReLU(), nnx.Tanh(), nnx.Sigmoid(), nnx.GELU(), nnx.GELU(approximate="tanh"), nnx.SiLU(),
            nnx.ELU(alpha=0.7), nnx.LeakyReLU(0.2), nnx.Softmax(dim=1), nnx.LogSoftmax(dim=-1), nnx.Softplus(),
            nnx.Softplus(beta=2.0, threshold=1.0), nnx.Hardtanh(-0.5, 0.7), nnx.Mish()]
    for a in acts:
        L.append((f"act_{a!r}", lambda a=a: nnx.Sequential(nnx.Linear(5, 6), a), (4, 5), {}))
    L.append(("prelu_channels", lambda: nnx.Sequential(nnx.Conv2d(2, 3, 1), nnx.PReLU(3)), (2, 2, 4, 4), {}))
    L.append(("prelu_shared", lambda: nnx.Sequential(nnx.Linear(5, 6), nnx.PReLU()), (4, 5), {}))
    return L


MODELS = _models()


@pytest.mark.parametrize("name,factory,shape,kwargs", MODELS, ids=[m[0] for m in MODELS])
def test_onnxruntime_agrees_with_nnx(backend, name, factory, shape, kwargs):
    model = randomise(factory())
    _check(model, shape, **kwargs)


def _rnn_cases():
    cases = []
    for cls in ("RNN", "LSTM", "GRU"):
        for layers, bidir, batch_first in ((1, False, False), (2, True, True), (2, False, True), (1, True, False)):
            cases.append((cls, layers, bidir, batch_first))
    cases.append(("RNN_relu", 2, True, False))
    cases.append(("GRU_nobias", 1, True, True))
    return cases


@pytest.mark.parametrize("kind,layers,bidir,batch_first", _rnn_cases(),
                         ids=[f"{k}-l{n}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}" for k, n, b, f in _rnn_cases()])
def test_recurrent_layers_with_onnx_gate_order(backend, kind, layers, bidir, batch_first):
    kwargs = {"num_layers": layers, "bidirectional": bidir, "batch_first": batch_first}
    if kind == "RNN_relu":
        model = nnx.RNN(4, 5, nonlinearity="relu", **kwargs)
    elif kind == "GRU_nobias":
        model = nnx.GRU(4, 5, bias=False, **kwargs)
    else:
        model = getattr(nnx, kind)(4, 5, **kwargs)
    shape = (3, 6, 4) if batch_first else (6, 3, 4)
    _check(randomise(model), shape, other_batch=2, dynamic={"input": {0 if batch_first else 1: "batch"}},
           batch_axis=0 if batch_first else 1)


def test_recurrent_unbatched_input(backend):
    _check(randomise(nnx.LSTM(4, 3, num_layers=2, bidirectional=True)), (5, 4), dynamic=None)


def test_training_mode_warns_exports_eval_and_keeps_the_mode(backend):
    model = randomise(nnx.Sequential(nnx.Linear(4, 4), nnx.Dropout(0.5), nnx.BatchNorm1d(4))).train()
    buf = io.BytesIO()
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="training mode"):
        nnx.onnx.export(model, nnx.asarray(x), buf)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    np.testing.assert_allclose(_run(buf.getvalue(), {"input": x})[0], nnx.to_numpy(model(nnx.asarray(x))),
                               rtol=1e-5, atol=1e-6)


def test_no_warning_in_eval_mode(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnx.onnx.export(nnx.Linear(3, 2).eval(), nnx.asarray(np.zeros((1, 3))), io.BytesIO())


def test_unsupported_layer_is_named(backend):
    class Custom(nnx.Module):
        def forward(self, x):
            return self.record(x * 2.0, lambda dy, input_grad=True: (dy * 2.0, ()))

    with pytest.raises(nnx.onnx.UnsupportedLayerError, match="no ONNX converter for Custom"):
        nnx.onnx.export(nnx.Sequential(nnx.Linear(3, 3), Custom()).eval(), nnx.asarray(np.zeros((1, 3))),
                        io.BytesIO())


def test_unsupported_settings_are_named(backend):
    with pytest.raises(nnx.onnx.UnsupportedLayerError, match="proj_size"):
        nnx.onnx.export(nnx.LSTM(3, 4, proj_size=2).eval(), nnx.asarray(np.zeros((2, 1, 3))), io.BytesIO())
    with pytest.raises(nnx.onnx.UnsupportedLayerError, match="AvgPool2d with divisor_override and ceil_mode"):
        nnx.onnx.export(nnx.AvgPool2d(2, ceil_mode=True, divisor_override=3).eval(),
                        nnx.asarray(np.zeros((1, 1, 5, 5))), io.BytesIO())


def test_wrong_input_shape_is_a_clear_error(backend):
    model = nnx.Sequential(nnx.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match=r"example input of shape \(2, 5\) does not fit Sequential.*Linear"):
        nnx.onnx.export(model, nnx.asarray(np.zeros((2, 5))), io.BytesIO())


def test_bad_arguments(backend):
    model, x = nnx.Linear(2, 2).eval(), nnx.asarray(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="opset_version"):
        nnx.onnx.export(model, x, io.BytesIO(), opset_version=9)
    with pytest.raises(ValueError, match="neither input names"):
        nnx.onnx.export(model, x, io.BytesIO(), dynamic_axes={"inp": [0]})
    with pytest.raises(ValueError, match="output_names"):
        nnx.onnx.export(model, x, io.BytesIO(), output_names=["a", "b"])


def test_initialisers_are_state_dict_keys_and_load_back(backend, tmp_path):
    model = randomise(nnx.Sequential(nnx.Conv2d(2, 3, 3), nnx.BatchNorm2d(3), nnx.Flatten(), nnx.Linear(12, 2)))
    path = tmp_path / "m.onnx"
    proto = nnx.onnx.export(model, nnx.asarray(np.zeros((1, 2, 4, 4))), path)
    names = {t.name for t in proto.graph.initializer}
    assert set(model.state_dict()) <= names
    fresh = nnx.Sequential(nnx.Conv2d(2, 3, 3), nnx.BatchNorm2d(3), nnx.Flatten(), nnx.Linear(12, 2))
    nnx.onnx.load_weights(fresh, path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(nnx.to_numpy(fresh.state_dict()[k]), nnx.to_numpy(v), err_msg=k)


def test_load_weights_refuses_a_foreign_model(backend, tmp_path):
    path = tmp_path / "m.onnx"
    nnx.onnx.export(nnx.Linear(3, 2).eval(), nnx.asarray(np.zeros((1, 3))), path)
    other = nnx.Sequential(nnx.Linear(3, 2))
    with pytest.raises(ValueError, match="no initialiser"):
        nnx.onnx.load_weights(other, path)
    wrong = nnx.Linear(3, 4)
    before = nnx.to_numpy(wrong.weight).copy()
    with pytest.raises(ValueError, match="shape"):
        nnx.onnx.load_weights(wrong, path)
    np.testing.assert_array_equal(nnx.to_numpy(wrong.weight), before)


def test_custom_converter_registration(backend):
    class Double(nnx.Module):
        def forward(self, x):
            return self.record(x * 2.0, lambda dy, input_grad=True: (dy * 2.0, ()))

    @nnx.onnx.register_converter(Double)
    def _double(g, module, inputs):
        return g.node("Mul", [inputs[0], g.const(2.0, like=inputs[0])])

    _check(nnx.Sequential(nnx.Linear(3, 3), Double()).eval(), (2, 3))
