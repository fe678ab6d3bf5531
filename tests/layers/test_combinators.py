"""Combinators: merge ops, Split/Chunk, Residual and Parallel — gradchecks, torch parity, errors."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, host, layer_parity, rand


@pytest.mark.parametrize("make", [lambda: nnx.Add(), lambda: nnx.Mul(), lambda: nnx.Concat(1),
                                  lambda: nnx.Concat(-1), lambda: nnx.Stack(0), lambda: nnx.Stack(2)],
                         ids=["add", "mul", "concat1", "concat-1", "stack0", "stack2"])
def test_merge_ops_gradcheck_with_three_inputs(backend, make):
    inputs = [rand(2, 3, seed=s) for s in range(3)]
    assert nnx.gradcheck(make(), *inputs)


def test_merge_ops_values_match_torch(backend, torch):
    xs = [rand(2, 3, seed=s) for s in range(3)]
    ts = [torch.from_numpy(host(x)) for x in xs]
    assert_close(nnx.Add()(*xs), ts[0] + ts[1] + ts[2])
    assert_close(nnx.Mul()(*xs), ts[0] * ts[1] * ts[2])
    assert_close(nnx.Concat(1)(*xs), torch.cat(ts, 1))
    assert_close(nnx.Stack(1)(*xs), torch.stack(ts, 1))


@pytest.mark.parametrize("make", [lambda: nnx.Split(2, dim=1), lambda: nnx.Split([1, 3, 1], dim=1),
                                  lambda: nnx.Chunk(3, dim=1), lambda: nnx.Chunk(2, dim=0)],
                         ids=["split2", "sections", "chunk3", "chunk-rows"])
def test_split_and_chunk_match_torch_and_gradcheck(backend, torch, make):
    x = rand(4, 5, seed=1)
    m = make()
    pieces = m(x)
    tx = torch.from_numpy(host(x))
    ref = (torch.split(tx, m.split_size_or_sections, m.dim) if isinstance(m, nnx.Split)
           else torch.chunk(tx, m.chunks, m.dim))
    assert len(pieces) == len(ref)
    for p, t in zip(pieces, ref, strict=True):
        assert_close(p, t)
    grads = tuple(None if i == 1 else nnx.asarray(np.ones(tuple(p.shape)), dtype="float64")
                  for i, p in enumerate(pieces))
    dx = m.backward(grads)  # a piece without gradient counts as zero
    want = np.ones((4, 5))
    index = [slice(None)] * 2
    start = sum(int(p.shape[m.dim]) for p in pieces[:1])
    index[m.dim] = slice(start, start + int(pieces[1].shape[m.dim]))
    want[tuple(index)] = 0.0
    np.testing.assert_array_equal(host(dx), want)
    assert nnx.gradcheck(make(), x)


def _basic_block(torch_nn, c_in, c_out, stride, nnx_mode):
    """A ResNet basic block, built from the combinators (nnx) or by hand (torch)."""
    if nnx_mode:
        body = nnx.Sequential(nnx.Conv2d(c_in, c_out, 3, stride, 1, bias=False, dtype="float64"),
                              nnx.BatchNorm2d(c_out, dtype="float64"), nnx.ReLU(),
                              nnx.Conv2d(c_out, c_out, 3, 1, 1, bias=False, dtype="float64"),
                              nnx.BatchNorm2d(c_out, dtype="float64"))
        down = None
        if stride != 1 or c_in != c_out:
            down = nnx.Sequential(nnx.Conv2d(c_in, c_out, 1, stride, bias=False, dtype="float64"),
                                  nnx.BatchNorm2d(c_out, dtype="float64"))
        return nnx.Sequential(nnx.Residual(body, down), nnx.ReLU())

    class TorchResidual(torch_nn.Module):  # the same attribute names, so the state_dict keys match
        def __init__(self):
            super().__init__()
            self.block = torch_nn.Sequential(torch_nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                                             torch_nn.BatchNorm2d(c_out), torch_nn.ReLU(),
                                             torch_nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                                             torch_nn.BatchNorm2d(c_out))
            self.shortcut = None
            if stride != 1 or c_in != c_out:
                self.shortcut = torch_nn.Sequential(torch_nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                                    torch_nn.BatchNorm2d(c_out))

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))

    return torch_nn.Sequential(TorchResidual(), torch_nn.ReLU()).double()


@pytest.mark.parametrize("c_in,c_out,stride", [(3, 3, 1), (3, 4, 2)], ids=["identity", "downsample"])
def test_residual_basic_block_matches_torch(backend, torch, c_in, c_out, stride):
    block = _basic_block(torch.nn, c_in, c_out, stride, nnx_mode=True)
    tblock = _basic_block(torch.nn, c_in, c_out, stride, nnx_mode=False)
    layer_parity(torch, block, tblock, rand(2, c_in, 6, 6, seed=3), tol=1e-9)


def test_residual_gradcheck_and_two_calls_before_backward(backend):
    block = nnx.Residual(nnx.Sequential(nnx.Linear(3, 3, dtype="float64"), nnx.Tanh()),
                         nnx.Linear(3, 3, dtype="float64"))
    assert nnx.gradcheck(block, rand(2, 3, seed=2))
    x1, x2 = rand(2, 3, seed=4), rand(2, 3, seed=5)
    block(x1)
    block(x2)
    d2 = block.backward(nnx.asarray(np.ones((2, 3)), dtype="float64"))
    d1 = block.backward(nnx.asarray(np.ones((2, 3)), dtype="float64"))
    block.zero_grad()
    block(x1)
    ref = block.backward(nnx.asarray(np.ones((2, 3)), dtype="float64"))
    assert_close(d1, host(ref))
    assert not np.allclose(host(d1), host(d2))


@pytest.mark.parametrize("merge", ["concat", "add", "mul", "stack"])
def test_parallel_merges_gradcheck(backend, merge):
    par = nnx.Parallel(nnx.Linear(3, 4, dtype="float64"), nnx.Sequential(nnx.Linear(3, 4, dtype="float64"),
                                                                           nnx.Sigmoid()),
                       merge=merge, dim=1)
    assert nnx.gradcheck(par, rand(2, 3, seed=6))


def test_parallel_with_a_merge_module_and_its_state_dict_keys(backend):
    par = nnx.Parallel(nnx.Linear(3, 2, dtype="float64"), nnx.Linear(3, 5, dtype="float64"), merge=nnx.Concat(-1))
    assert list(par.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    x = rand(4, 3, seed=7)
    y = par(x)
    branches = [getattr(par, i) for i in ("0", "1")]
    ref = np.concatenate([host(x) @ host(b.weight.data).T + host(b.bias.data) for b in branches], -1)
    assert_close(y, ref)


def test_combinator_errors_name_the_module(backend):
    with pytest.raises(ValueError, match=r"Add: every input must have the shape of input 0, \(2, 3\); input 1 has "
                                         r"\(3, 2\)"):
        nnx.Add()(rand(2, 3), rand(3, 2))
    with pytest.raises(ValueError, match=r"Concat\(dim=3\): dim 3 is out of range for inputs with 2 dimensions"):
        nnx.Concat(3)(rand(2, 3), rand(2, 3))
    with pytest.raises(ValueError, match=r"Split\(sections=\[1, 1\]\): the sections add up to 2, but dimension 0 "
                                         r"has size 4"):
        nnx.Split([1, 1])(rand(4, 2))
    with pytest.raises(ValueError, match=r"Residual: the block's output has shape \(2, 4\) but the shortcut gives "
                                         r"\(2, 3\)"):
        nnx.Residual(nnx.Linear(3, 4, dtype="float64"))(rand(2, 3))
    with pytest.raises(ValueError, match="Parallel: merge must be one of"):
        nnx.Parallel(nnx.Identity(), merge="max")
    split = nnx.Chunk(2, dim=1)
    split(rand(2, 4))
    with pytest.raises(ValueError, match=r"Chunk\(chunks=2, dim=1\).backward: expected a tuple of 2 gradients"):
        split.backward(nnx.asarray(np.ones((2, 2))))
