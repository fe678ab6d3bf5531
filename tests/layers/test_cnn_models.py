"""Small whole CNNs: a residual block (gradcheck and PyTorch parity), the digits example, save/load."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import assert_close, copy_params_to_torch, host, load_example, rand


def test_residual_block_gradcheck(backend):
    block_module = load_example("residual_block")
    nnx.manual_seed(0)
    x = rand(2, 2, 4, 4)
    assert nnx.gradcheck(block_module.BasicBlock(2, 2, dtype="float64"), x)
    assert nnx.gradcheck(block_module.BasicBlock(2, 3, stride=2, dtype="float64"), x)


def test_residual_block_matches_torch(backend, torch):
    block = load_example("residual_block").BasicBlock(3, 4, stride=2, dtype="float64")
    nn = torch.nn

    class TorchBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False, dtype=torch.float64)
            self.bn1 = nn.BatchNorm2d(4, dtype=torch.float64)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False, dtype=torch.float64)
            self.bn2 = nn.BatchNorm2d(4, dtype=torch.float64)
            self.downsample = nn.Sequential(nn.Conv2d(3, 4, 1, stride=2, bias=False, dtype=torch.float64),
                                            nn.BatchNorm2d(4, dtype=torch.float64))

        def forward(self, t):
            out = torch.relu(self.bn1(self.conv1(t)))
            return torch.relu(self.bn2(self.conv2(out)) + self.downsample(t))

    tblock = TorchBlock()
    copy_params_to_torch(block, tblock)  # same state_dict keys as torchvision's BasicBlock
    x = rand(2, 3, 6, 5)
    tx = torch.from_numpy(host(x).copy()).requires_grad_(True)
    ty = tblock(tx)
    y = block(x)
    assert_close(y, ty, rtol=1e-10, atol=1e-10)
    dy = np.random.default_rng(0).standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(dy))
    dx = block.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-10, atol=1e-10)
    tparams = dict(tblock.named_parameters())
    for name, p in block.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=1e-9, atol=1e-10, what=name)
    tsd = tblock.state_dict()
    for key, value in block.state_dict().items():
        assert_close(value, tsd[key], rtol=1e-12, atol=1e-12, what=key)


def test_cnn_digits_example_reaches_97_percent():
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    try:
        accuracy = load_example("cnn_digits").main(["--quiet", "--epochs", "8", "--seed", "0"])
    finally:
        nnx.set_backend("numpy")
    assert accuracy >= 0.97


@pytest.mark.parametrize("name", ["array_api_strict", "torch"])
def test_cnn_digits_example_runs_on_other_backends(name):
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    if nnx.available_backends().get(name) is not True:
        pytest.skip(f"backend {name} not available: {nnx.available_backends().get(name)}")
    try:
        accuracy = load_example("cnn_digits").main(["--quiet", "--epochs", "1", "--backend", name])
    finally:
        nnx.set_backend("numpy")
    assert accuracy >= 0.6


@pytest.mark.parametrize("suffix", [".nnx", ".safetensors"])
def test_cnn_save_load_round_trip_keeps_0d_buffers(tmp_path, suffix):
    """Regression: 0-d arrays (BatchNorm's num_batches_tracked, as torch) were written with shape (1,)."""
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    nnx.set_backend("numpy")
    model = nnx.Sequential(nnx.Conv2d(1, 2, 3), nnx.BatchNorm2d(2), nnx.ReLU())
    x = rand(2, 1, 5, 5, dtype="float32")
    model(x)
    model.eval()
    path = str(tmp_path / f"cnn{suffix}")
    nnx.save(model, path)
    loaded = nnx.load(path)
    state = loaded.state_dict() if isinstance(loaded, nnx.Module) else loaded
    assert tuple(state["1.num_batches_tracked"].shape) == ()
    assert int(host(state["1.num_batches_tracked"])) == 1
    fresh = nnx.Sequential(nnx.Conv2d(1, 2, 3), nnx.BatchNorm2d(2), nnx.ReLU())
    fresh.load_state_dict(state)
    fresh.eval()
    np.testing.assert_array_equal(host(fresh(x)), host(model(x)))
