"""nnx.onnx.export of Graph, Split/Chunk, attention, Transformer layers, recurrent cells and losses:
onnx.checker passes and onnxruntime (CPU) agrees with nnx to 1e-5, on every backend, at two batch sizes."""

from __future__ import annotations

import io

import numpy as np
import pytest

import nnx

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'nnx-backprop[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="exported files are checked by onnxruntime: pip install onnxruntime")
import nnx.onnx  # noqa: E402
from nnx.onnx.builder import _flatten  # noqa: E402

from helpers import randomise  # noqa: E402


def _check_multi(model, make_inputs, dynamic: dict[str, dict[int, str]], sizes=(3, 5), rtol=1e-5, atol=1e-5):
    """Export with inputs ``make_inputs(sizes[0])`` (a dict name -> host array, in call order); run
    onnxruntime on every size; compare every output with nnx."""
    first = make_inputs(sizes[0])
    names = list(first)
    outs = _flatten(model(*[nnx.asarray(a) for a in first.values()]))
    out_names = [f"out{i}" for i in range(len(outs))]
    buf = io.BytesIO()
    proto = nnx.onnx.export(model, tuple(nnx.asarray(a) for a in first.values()), buf, input_names=names,
                            output_names=out_names, dynamic_axes=dynamic or None)
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in sizes:
        feeds = make_inputs(n)
        got = sess.run(None, feeds)
        want = [nnx.to_numpy(y) for y in _flatten(model(*[nnx.asarray(a) for a in feeds.values()]))]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return proto


def _normal(*shape, seed=1):
    return np.random.default_rng(seed + sum(shape)).normal(size=shape).astype(np.float32)


# ----------------------------------------------------------------------------- Graph, Split, Chunk
def test_graph_with_named_inputs_shared_module_and_tuple_outputs(backend):
    shared = nnx.Linear(4, 4)
    g = nnx.Graph(inputs=["x", "y"])
    g.add("a", shared, "x")
    g.add("b", shared, "y")               # the same module twice: one set of initialisers
    g.add("act", nnx.Tanh(), "a")
    g.add("sum", nnx.Add(), "act", "b", "x")
    g.add("halves", nnx.Chunk(2, dim=1), "sum")
    g.add("parts", nnx.Split([1, 3], dim=1), "b")
    g.add("cat", nnx.Concat(dim=1), "halves:1", "parts:0")
    g.set_outputs("cat", "halves:0", "x")
    model = randomise(g)
    proto = _check_multi(model, lambda n: {"x": _normal(n, 4), "y": _normal(n, 4, seed=2)},
                         {"x": {0: "batch"}, "y": {0: "batch"}})
    used = {i for node in proto.graph.node for i in node.input}
    assert "a.weight" in used and "b.weight" not in used  # both nodes read the shared module's weight


def test_graph_of_recurrent_and_attention_nodes(backend):
    g = nnx.Graph(inputs=["seq"])
    g.add("rnn", nnx.GRU(4, 4, batch_first=True), "seq")
    g.add("attn", nnx.MultiheadAttention(4, 2, batch_first=True), "rnn:0", "seq", "seq")
    g.add("out", nnx.Add(), "attn:0", "rnn:0")
    g.set_outputs("out", "attn:1")
    _check_multi(randomise(g), lambda n: {"seq": _normal(n, 6, 4)}, {"seq": {0: "batch"}})


@pytest.mark.parametrize("module,shape", [(nnx.Split(2, dim=1), (3, 5)), (nnx.Split([1, 4, 2], dim=-1), (3, 2, 7)),
                                          (nnx.Chunk(3, dim=1), (3, 7, 2)), (nnx.Chunk(4, dim=1), (2, 1, 3))],
                         ids=["split_int", "split_sections", "chunk", "chunk_single"])
def test_split_and_chunk_outputs(backend, module, shape):
    _check_multi(module.eval(), lambda n: {"input": _normal(n, *shape[1:])}, {"input": {0: "batch"}})


# ----------------------------------------------------------------------------- attention, Transformer
def _qkv(n, q_shape, kv_shape, batch_axis):
    def at(shape):
        s = list(shape)
        s[batch_axis] = n
        return s
    return {"query": _normal(*at(q_shape)), "key": _normal(*at(kv_shape), seed=3),
            "value": _normal(*at(kv_shape), seed=4)}


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_outputs_and_weights(backend, batch_first):
    mha = randomise(nnx.MultiheadAttention(8, 2, batch_first=batch_first))
    b = 0 if batch_first else 1
    q_shape, kv_shape = ((2, 5, 8), (2, 7, 8)) if batch_first else ((5, 2, 8), (7, 2, 8))
    dyn = {n: {b: "batch"} for n in ("query", "key", "value")}
    _check_multi(mha, lambda n: _qkv(n, q_shape, kv_shape, b), dyn)


def test_multihead_attention_kdim_vdim_no_bias_unbatched(backend):
    mha = randomise(nnx.MultiheadAttention(6, 3, bias=False, kdim=4, vdim=5))
    _check_multi(mha, lambda n: {"query": _normal(n, 6), "key": _normal(7, 4, seed=3), "value": _normal(7, 5)},
                 {"query": {0: "length"}})


class CausalBlocks(nnx.Module):
    """What examples/tiny_gpt.py does: Transformer blocks called with ``is_causal=True``."""

    def __init__(self, layer, norm=None):
        super().__init__()
        self.layer, self.norm = layer, norm

    def forward(self, x):
        y = self.layer(x, is_causal=True)
        return self.norm(y) if self.norm is not None else y


@nnx.onnx.register_converter(CausalBlocks)
def _causal_blocks(g, module, inputs):
    y = g.convert(module.layer, inputs, is_causal=True)
    if module.norm is None:
        return y
    return g.convert(module.norm, [y])


_LAYERS = {
    "post_relu_bf": lambda: nnx.TransformerEncoderLayer(8, 2, 16, batch_first=True),
    "pre_gelu_tanh_bf": lambda: nnx.TransformerEncoderLayer(8, 4, 12, activation=nnx.GELU(approximate="tanh"),
                                                             batch_first=True, norm_first=True),
    "post_gelu_seqfirst": lambda: nnx.TransformerEncoderLayer(8, 2, 16, activation="gelu"),
    "nobias_prenorm": lambda: nnx.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=True, bias=False),
}


@pytest.mark.parametrize("kind", list(_LAYERS))
def test_transformer_encoder_layer(backend, kind):
    layer = randomise(_LAYERS[kind]())
    b = 0 if layer.self_attn.batch_first else 1
    dyn = {"src": {b: "batch", 1 - b: "length"}}

    def inputs(n):
        return {"src": _normal(n, 6, 8) if b == 0 else _normal(6, n, 8)}
    _check_multi(layer, inputs, dyn)


@pytest.mark.parametrize("batch_first", [True, False])
def test_causal_encoder_stack_dynamic_batch_and_length(backend, batch_first):
    layer = nnx.TransformerEncoderLayer(8, 2, 16, activation=nnx.GELU(approximate="tanh"), batch_first=batch_first,
                                        norm_first=True)
    model = randomise(CausalBlocks(nnx.TransformerEncoder(layer, 2, norm=nnx.LayerNorm(8))))
    b = 0 if batch_first else 1

    def inputs(n):  # batch n and length n + 2: both axes are dynamic
        return {"src": _normal(n, n + 2, 8) if batch_first else _normal(n + 2, n, 8)}
    _check_multi(model, inputs, {"src": {b: "batch", 1 - b: "length"}, "out0": {b: "batch", 1 - b: "length"}})


def test_causal_mask_changes_the_output(backend):
    """The causal export is not the unmasked one: the first position sees only itself."""
    layer = randomise(nnx.TransformerEncoderLayer(8, 2, 16, batch_first=True))
    x = _normal(2, 5, 8)
    buf_c, buf_u = io.BytesIO(), io.BytesIO()
    nnx.onnx.export(randomise(CausalBlocks(layer)), nnx.asarray(x), buf_c)
    nnx.onnx.export(layer, nnx.asarray(x), buf_u)
    run = [ort.InferenceSession(b.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
           for b in (buf_c, buf_u)]
    assert not np.allclose(run[0], run[1], atol=1e-3)
    np.testing.assert_allclose(run[0], nnx.to_numpy(layer(nnx.asarray(x), is_causal=True)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_decoder(backend, norm_first):
    layer = nnx.TransformerDecoderLayer(8, 2, 16, batch_first=True, norm_first=norm_first)
    model = randomise(nnx.TransformerDecoder(layer, 2, norm=nnx.LayerNorm(8) if norm_first else None))
    _check_multi(model, lambda n: {"tgt": _normal(n, 4, 8), "memory": _normal(n, 6, 8, seed=5)},
                 {"tgt": {0: "batch"}, "memory": {0: "batch"}})
    _check_multi(randomise(layer), lambda n: {"tgt": _normal(n, 4, 8), "memory": _normal(n, 6, 8, seed=5)},
                 {"tgt": {0: "batch"}, "memory": {0: "batch"}})


def test_attention_masks_and_extras_are_refused_by_name(backend):
    x = nnx.asarray(_normal(2, 3, 4))
    with pytest.raises(nnx.onnx.UnsupportedLayerError, match="MultiheadAttention with add_bias_kv"):
        nnx.onnx.export(nnx.MultiheadAttention(4, 2, add_bias_kv=True, batch_first=True).eval(), (x, x, x),
                        io.BytesIO())

    class Masked(nnx.Module):
        def __init__(self):
            super().__init__()
            self.layer = nnx.TransformerEncoderLayer(4, 2, 8, batch_first=True)

        def forward(self, x):
            return self.layer(x, src_key_padding_mask=nnx.asarray(np.zeros((2, 3), dtype=bool)))

    @nnx.onnx.register_converter(Masked)
    def _masked(g, module, inputs):
        return g.convert(module.layer, inputs, src_key_padding_mask=object())

    with pytest.raises(nnx.onnx.UnsupportedLayerError, match="TransformerEncoderLayer with src_key_padding_mask"):
        nnx.onnx.export(Masked().eval(), x, io.BytesIO())


# ----------------------------------------------------------------------------- recurrent cells
@pytest.mark.parametrize("kind", ["RNNCell", "RNNCell_relu", "LSTMCell", "GRUCell", "GRUCell_nobias"])
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_cells(backend, kind, with_state):
    if kind == "RNNCell_relu":
        cell = nnx.RNNCell(4, 5, nonlinearity="relu")
    elif kind == "GRUCell_nobias":
        cell = nnx.GRUCell(4, 5, bias=False)
    else:
        cell = getattr(nnx, kind)(4, 5)
    cell = randomise(cell)
    if kind == "LSTMCell" and with_state:
        class Step(nnx.Module):  # the (h, c) tuple reaches the cell through a parent module
            def __init__(self):
                super().__init__()
                self.cell = cell

            def forward(self, x, h, c):
                return self.cell(x, (h, c))

        @nnx.onnx.register_converter(Step)
        def _step(g, module, inputs):
            return g.convert(module.cell, [inputs[0], (inputs[1], inputs[2])])

        _check_multi(Step().eval(), lambda n: {"x": _normal(n, 4), "h": _normal(n, 5), "c": _normal(n, 5, seed=7)},
                     {k: {0: "batch"} for k in ("x", "h", "c")})
        return
    feeds = (lambda n: {"x": _normal(n, 4), "h": _normal(n, 5)}) if with_state else (lambda n: {"x": _normal(n, 4)})
    _check_multi(cell, feeds, {k: {0: "batch"} for k in (("x", "h") if with_state else ("x",))})


def test_cell_unbatched(backend):
    _check_multi(randomise(nnx.GRUCell(3, 4)), lambda n: {"x": _normal(3), "h": _normal(4)}, {}, sizes=(1,))


# ----------------------------------------------------------------------------- losses
def _int_targets(n, high, seed=0):
    return np.random.default_rng(seed + n).integers(0, high, size=n).astype(np.int64)


def _probs(*shape):
    return (1.0 / (1.0 + np.exp(-_normal(*shape)))).astype(np.float32)


def _pair(n):
    return {"input": _normal(n, 3), "target": _normal(n, 3, seed=9)}


_LOSSES = [
    ("mse", lambda: nnx.MSELoss(), _pair),
    ("l1_sum", lambda: nnx.L1Loss(reduction="sum"), _pair),
    ("huber_none", lambda: nnx.HuberLoss(reduction="none", delta=0.7),
     _pair),
    ("smoothl1", lambda: nnx.SmoothL1Loss(beta=0.5), _pair),
    ("smoothl1_beta0", lambda: nnx.SmoothL1Loss(beta=0.0),
     _pair),
    ("cross_entropy", lambda: nnx.CrossEntropyLoss(), lambda n: {"input": _normal(n, 4), "target": _int_targets(n, 4)}),
    ("cross_entropy_weighted_ignore", lambda: nnx.CrossEntropyLoss(weight=nnx.asarray([1.0, 2.0, 0.5, 1.5]),
                                                                   ignore_index=2),
     lambda n: {"input": _normal(n, 4), "target": _int_targets(n, 4)}),
    ("cross_entropy_spatial_none", lambda: nnx.CrossEntropyLoss(reduction="none"),
     lambda n: {"input": _normal(n, 4, 3), "target": np.random.default_rng(n).integers(0, 4, (n, 3))}),
    ("nll_sum", lambda: nnx.NLLLoss(reduction="sum"), lambda n: {"input": _normal(n, 4), "target": _int_targets(n, 4)}),
    ("bce", lambda: nnx.BCELoss(), lambda n: {"input": _probs(n, 3), "target": _probs(n, 3) > 0.5}),
    ("bce_weight", lambda: nnx.BCELoss(weight=nnx.asarray([0.5, 1.0, 2.0]), reduction="none"),
     lambda n: {"input": _probs(n, 3), "target": _probs(n, 3)}),
    ("bce_logits", lambda: nnx.BCEWithLogitsLoss(), lambda n: {"input": 4 * _normal(n, 3), "target": _probs(n, 3)}),
    ("bce_logits_pos_weight", lambda: nnx.BCEWithLogitsLoss(pos_weight=nnx.asarray([0.5, 1.0, 3.0]), reduction="sum"),
     lambda n: {"input": 4 * _normal(n, 3), "target": _probs(n, 3)}),
]


@pytest.mark.parametrize("name,factory,feeds", _LOSSES, ids=[c[0] for c in _LOSSES])
def test_loss_inference_forms(backend, name, factory, feeds):
    def typed(n):  # bool targets as floats, integer targets as int64
        return {k: (v.astype(np.float32) if v.dtype == bool else v.astype(np.int64) if v.dtype.kind == "i" else v)
                for k, v in feeds(n).items()}
    dyn = {"input": {0: "batch"}, "target": {0: "batch"}}
    if "none" in name:
        dyn["out0"] = {0: "batch"}
    _check_multi(factory().eval(), typed, dyn)


def test_losses_without_converter_are_refused_by_name(backend):
    x = nnx.asarray(_normal(3, 4))
    with pytest.raises(nnx.onnx.UnsupportedLayerError, match="no ONNX converter for KLDivLoss"):
        nnx.onnx.export(nnx.KLDivLoss(reduction="batchmean").eval(), (x, x), io.BytesIO())
    with pytest.raises(nnx.onnx.UnsupportedLayerError, match="label_smoothing"):
        nnx.onnx.export(nnx.CrossEntropyLoss(label_smoothing=0.1).eval(), (x, nnx.asarray(np.array([0, 1, 2]))),
                        io.BytesIO())


# ----------------------------------------------------------------------------- coverage
def test_every_public_layer_has_a_converter():
    """Each class nnx.layers exports is convertible, except abstract bases (documented in docs/interop.md)."""
    from nnx.onnx.builder import converter_for

    abstract = {"RNNBase", "RNNCellBase"}
    missing = []
    for name in nnx.layers.__all__:
        cls = getattr(nnx.layers, name)
        if isinstance(cls, type) and name not in abstract and converter_for(cls.__new__(cls)) is None:
            missing.append(name)
    assert missing == []


def test_tiny_gpt_example_exports_with_a_custom_converter(backend):
    """examples/tiny_gpt.py's model (causal pre-norm blocks, tied-free head) through the converter
    docs/interop.md shows; batch and sequence length dynamic."""
    from helpers import load_example

    TinyGPT = load_example("tiny_gpt").TinyGPT

    @nnx.onnx.register_converter(TinyGPT)
    def _tiny_gpt(g, m, inputs):
        ids = inputs[0]
        tokens = g.convert(m.tok, [ids])                                   # (N, T, d)
        length = g.node("Squeeze", [g.node("Slice", [g.node("Shape", [ids]), g.ints([1]), g.ints([2])]),
                                    g.ints([0])])
        positions = g.node("Range", [g.const(0, dtype="int64"), length, g.const(1, dtype="int64")])
        x = g.node("Add", [tokens, g.node("Gather", [g.param(m.pos, "weight"), positions], axis=0)])
        g.placeholder(x, g.shape(tokens), like=tokens)
        for blk in m.blocks:
            x = g.convert(blk, [x], is_causal=True)
        return g.convert(m.head, [g.convert(m.ln_f, [x])])

    model = randomise(TinyGPT(vocab=11, block=8, d_model=8, nhead=2, layers=2, dropout=0.1))

    def ids(n):
        return {"ids": np.random.default_rng(n).integers(0, 11, (n, n + 2)).astype(np.int64)}
    _check_multi(model, ids, {"ids": {0: "batch", 1: "length"}, "out0": {0: "batch", 1: "length"}})


@pytest.mark.parametrize("opset", [14, 18])
def test_attention_weights_across_opsets(backend, opset):
    """ReduceMean takes its axes as an attribute before opset 18 and as an input from 18 on."""
    mha = randomise(nnx.MultiheadAttention(4, 2, batch_first=True))
    x = _normal(2, 3, 4)
    buf = io.BytesIO()
    nnx.onnx.export(mha, tuple(nnx.asarray(a) for a in (x, x, x)), buf, opset_version=opset)
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(
        None, {"input_0": x, "input_1": x, "input_2": x})
    for g, w in zip(got, mha(*[nnx.asarray(x)] * 3)):
        np.testing.assert_allclose(g, nnx.to_numpy(w), rtol=1e-5, atol=1e-5)
