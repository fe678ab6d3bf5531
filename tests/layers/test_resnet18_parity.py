"""A ResNet-18 (torchvision's layout and state_dict keys) written in torch and in nnx, loaded from the
same state_dict: outputs, input gradients, every parameter gradient and the BatchNorm running
statistics agree in float64 on every backend. The nnx model has no hand-written backward: each
basic block is an ``nnx.Graph`` whose node names are torchvision's attribute names."""

from __future__ import annotations

import numpy as np

import nnx

from helpers import assert_close, host


def _nnx_block(cin: int, cout: int, stride: int) -> nnx.Graph:
    g = nnx.Graph(inputs=["x"])
    g.add("conv1", nnx.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), "x")
    g.add("bn1", nnx.BatchNorm2d(cout), "conv1")
    g.add("relu", nnx.ReLU(), "bn1")
    g.add("conv2", nnx.Conv2d(cout, cout, 3, padding=1, bias=False), "relu")
    g.add("bn2", nnx.BatchNorm2d(cout), "conv2")
    shortcut = "x"
    if stride != 1 or cin != cout:
        g.add("downsample", nnx.Sequential(nnx.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                           nnx.BatchNorm2d(cout)), "x")
        shortcut = "downsample"
    g.add("add", nnx.Add(), "bn2", shortcut)
    g.add("relu_out", nnx.ReLU(), "add")
    g.set_outputs("relu_out")
    return g


def nnx_resnet18(num_classes: int = 10) -> nnx.Graph:
    g = nnx.Graph(inputs=["x"])
    g.add("conv1", nnx.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), "x")
    g.add("bn1", nnx.BatchNorm2d(64), "conv1")
    g.add("relu", nnx.ReLU(), "bn1")
    g.add("maxpool", nnx.MaxPool2d(3, stride=2, padding=1), "relu")
    prev, cin = "maxpool", 64
    for i, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        prev = g.add(f"layer{i}", nnx.Sequential(_nnx_block(cin, cout, stride), _nnx_block(cout, cout, 1)), prev)
        cin = cout
    g.add("avgpool", nnx.AdaptiveAvgPool2d(1), prev)
    g.add("flatten", nnx.Flatten(), "avgpool")
    g.add("fc", nnx.Linear(512, num_classes), "flatten")
    g.set_outputs("fc")
    return g


def torch_resnet18(torch, num_classes: int = 10):
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cfg, cin = [(64, 1), (128, 2), (256, 2), (512, 2)], 64
            for i, (cout, stride) in enumerate(cfg, start=1):
                setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
                cin = cout
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18()


def test_resnet18_from_a_torch_state_dict_matches_torch(backend, torch):
    torch.manual_seed(0)
    tmodel = torch_resnet18(torch).double().train()
    with torch.no_grad():  # non-trivial BatchNorm affine parameters and running statistics
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
    model = nnx_resnet18().double()
    state = tmodel.state_dict()
    own = model.state_dict()
    assert set(own) == set(state), set(own) ^ set(state)
    model.load_state_dict({k: v.numpy() for k, v in state.items()})
    model.train()

    # 64x64 leaves 2x2 maps in layer4: BatchNorm over 12 values per channel (over 3 it is ill-conditioned)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64))
    tx = torch.tensor(x, requires_grad=True)
    ty = tmodel(tx)
    y = model(nnx.asarray(x, dtype="float64"))
    assert_close(y, ty.detach(), rtol=1e-9, atol=1e-9, what="logits")
    dy = np.random.default_rng(1).standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    dx = model.backward(nnx.asarray(dy, dtype="float64"))
    assert_close(dx, tx.grad, rtol=1e-8, atol=1e-9, what="input gradient")
    tparams = dict(tmodel.named_parameters())
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(tparams) == 62
    for name, p in model.named_parameters():
        assert_close(p.grad, tparams[name].grad, rtol=1e-8, atol=1e-9, what=f"gradient of {name}")
    tbuffers = dict(tmodel.named_buffers())
    for name, buf in model.named_buffers():
        if host(buf).dtype.kind == "f":
            assert_close(buf, tbuffers[name].detach(), rtol=1e-10, atol=1e-12, what=name)
        else:
            assert int(host(buf)) == int(tbuffers[name])


def test_resnet18_state_dict_round_trips_to_torch(backend, torch):
    """The nnx model's state_dict loads into torch's as is (same keys, shapes and values)."""
    nnx.manual_seed(0)
    model = nnx_resnet18()
    tmodel = torch_resnet18(torch)
    missing = tmodel.load_state_dict({k: torch.from_numpy(np.array(host(v))) for k, v in model.state_dict().items()})
    assert not missing.missing_keys and not missing.unexpected_keys
    with torch.no_grad():
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        tmodel.eval()
        model.eval()
        assert_close(model(nnx.asarray(x)), tmodel(torch.from_numpy(x)), rtol=1e-4, atol=1e-4, what="eval logits")
