"""nnx.compile_step: a whole training step compiled by jax.jit equals eager execution step by step
(parameters, buffers, optimizer state, loss), traces once across learning-rate changes, and refuses
what a compiled program cannot do."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

jax = pytest.importorskip("jax", reason="compiled steps need JAX (pip install 'nnx-backprop[jax]')")


@pytest.fixture(autouse=True)
def _jax_backend():
    if nnx.available_backends().get("jax") is not True:
        pytest.skip(f"jax backend unavailable: {nnx.available_backends().get('jax')}")
    with nnx.use_backend("jax"):
        yield


def _mlp():
    return nnx.Sequential(nnx.Linear(6, 16), nnx.Tanh(), nnx.Linear(16, 3))


def _cnn():
    return nnx.Sequential(nnx.Conv2d(1, 4, 3, padding=1), nnx.BatchNorm2d(4), nnx.ReLU(), nnx.MaxPool2d(2),
                          nnx.Flatten(), nnx.Linear(4 * 3 * 3, 3))


class _LSTMHead(nnx.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nnx.LSTM(4, 8, batch_first=True)
        self.head = nnx.Linear(8, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])

    def backward(self, grad_output, *, input_grad=True):
        g = self.head.backward(grad_output)
        dout = nnx.get_backend().xp.zeros((g.shape[0], 5, 8), dtype=g.dtype)
        dout = nnx.get_backend().at_set(dout, (slice(None), -1, slice(None)), g)
        return self.lstm.backward((dout, None), input_grad=input_grad)


CASES = {
    "mlp-adam": (_mlp, (10, 6), lambda ps: nnx.optim.Adam(ps, lr=1e-2, weight_decay=0.01)),
    "cnn-sgd": (_cnn, (8, 1, 6, 6), lambda ps: nnx.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)),
    "lstm-adamw": (_LSTMHead, (6, 5, 4), lambda ps: nnx.optim.AdamW(ps, lr=1e-2)),
}


def _train(case: str, compiled: bool, steps: int = 5):
    factory, shape, make_opt = CASES[case]
    nnx.manual_seed(0)
    model = factory().double()
    opt = make_opt(model.parameters())
    sched = nnx.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    loss_fn = nnx.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    step = nnx.compile_step(model, loss_fn, opt) if compiled else None
    losses = []
    for _ in range(steps):
        x = nnx.asarray(rng.standard_normal(shape), dtype="float64")
        y = nnx.asarray(rng.integers(0, 3, shape[0]))
        if compiled:
            loss = step(x, y)
        else:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
        sched.step()
        losses.append(float(loss))
    return losses, model.state_dict(), opt.state_dict(), step


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_step_equals_eager(case):
    losses, state, opt_state, _ = _train(case, compiled=False)
    c_losses, c_state, c_opt_state, step = _train(case, compiled=True)
    np.testing.assert_allclose(c_losses, losses, rtol=1e-10, atol=1e-12)
    assert set(c_state) == set(state)
    for k in state:  # parameters and buffers (BatchNorm running statistics, batch counter)
        np.testing.assert_allclose(nnx.to_numpy(c_state[k]), nnx.to_numpy(state[k]), rtol=1e-10, atol=1e-12,
                                   err_msg=k)
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            if isinstance(v, (int, float)):
                assert c_opt_state["state"][i][k] == v, (i, k)  # step counters stay Python numbers
            else:
                np.testing.assert_allclose(nnx.to_numpy(c_opt_state["state"][i][k]), nnx.to_numpy(v),
                                           rtol=1e-10, atol=1e-12)
    assert step.traces == 1  # the learning rate changed twice (StepLR) without retracing


def test_a_changed_hyper_parameter_retraces():
    nnx.manual_seed(0)
    model = _mlp()
    opt = nnx.optim.Adam(model.parameters(), lr=1e-2)
    step = nnx.compile_step(model, nnx.CrossEntropyLoss(), opt)
    x, y = nnx.asarray(np.ones((4, 6))), nnx.asarray(np.array([0, 1, 2, 0]))
    for _ in range(3):
        step(x, y)
    assert step.traces == 1
    opt.param_groups[0]["weight_decay"] = 0.1
    step(x, y)
    assert step.traces == 2


def test_dropout_in_training_mode_is_refused():
    model = nnx.Sequential(nnx.Linear(6, 8), nnx.Dropout(0.5), nnx.Linear(8, 3))
    opt = nnx.optim.SGD(model.parameters(), lr=0.1)
    step = nnx.compile_step(model, nnx.CrossEntropyLoss(), opt)
    x, y = nnx.asarray(np.ones((4, 6))), nnx.asarray(np.array([0, 1, 2, 0]))
    step(x, y)  # eager: creates the optimizer state
    with pytest.raises(ValueError, match="draws random numbers"):
        step(x, y)
    model[1].eval()
    step(x, y)


def test_other_backends_are_refused():
    with nnx.use_backend("numpy"):
        model = _mlp()
        with pytest.raises(ValueError, match="compiled steps need the JAX backend"):
            nnx.compile_step(model, nnx.CrossEntropyLoss(), nnx.optim.SGD(model.parameters(), lr=0.1))


def test_an_optimizer_missing_parameters_is_refused():
    model = _mlp()
    with pytest.raises(ValueError, match="does not update every parameter"):
        nnx.compile_step(model, nnx.CrossEntropyLoss(), nnx.optim.SGD(model[0].parameters(), lr=0.1))
