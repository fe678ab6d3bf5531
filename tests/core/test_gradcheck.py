"""nnx.gradcheck itself: it accepts correct backward functions and rejects wrong ones, naming the input or
parameter and the index where they disagree."""

from __future__ import annotations

import numpy as np
import pytest

import nnx
import nnx.functional as F

from helpers import host, rand


def _scaled_at(b, g, index, factor):
    """``g`` with the element at ``index`` multiplied by ``factor`` (pure standard, any backend)."""
    hot = np.zeros(tuple(g.shape))
    hot[index] = factor - 1.0
    return g + g * nnx.asarray(hot, dtype=g.dtype, backend=b)


def test_accepts_correct_backward(backend):
    x = rand(3, 4, seed=1)
    assert nnx.gradcheck(F.tanh_forward, x) is True
    assert nnx.gradcheck(nnx.Linear(4, 2, dtype="float64"), x) is True
    w, bias = rand(2, 4, seed=2), rand(2, seed=3)
    assert nnx.gradcheck(F.linear_forward, x, w, bias) is True  # dx for x, grads for w and bias
    assert nnx.gradcheck(F.softmax_forward, x, forward_kwargs={"dim": 0}) is True


def test_rejects_gradient_wrong_by_ten_percent(backend):
    def forward(x):
        y, back = F.tanh_forward(x)

        def wrong(dy, input_grad=True):
            dx, grads = back(dy, input_grad)
            return dx * 1.1, grads

        return y, wrong

    with pytest.raises(nnx.GradcheckError, match=r"gradcheck: gradient of input 0 disagrees at index \(\d, \d\): "
                                                 r"analytic .*, numerical .*\(\|diff\|"):
        nnx.gradcheck(forward, rand(3, 4, seed=1))


def test_names_the_exact_index(backend):
    def forward(x):
        y, back = F.sigmoid_forward(x)

        def wrong(dy, input_grad=True):
            dx, grads = back(dy, input_grad)
            return _scaled_at(backend, dx, (1, 2), 1.1), grads

        return y, wrong

    with pytest.raises(nnx.GradcheckError, match=r"gradient of input 0 disagrees at index \(1, 2\)"):
        nnx.gradcheck(forward, rand(3, 4, seed=1))


def test_names_the_wrong_extra_input(backend):
    def forward(x, w, b):
        y, back = F.linear_forward(x, w, b)

        def wrong(dy, input_grad=True):
            dx, (dw, db) = back(dy, input_grad)
            return dx, (dw, db * 0.9)

        return y, wrong

    with pytest.raises(nnx.GradcheckError, match=r"gradient of input 2 disagrees at index \(\d,\)"):
        nnx.gradcheck(forward, rand(3, 4, seed=1), rand(2, 4, seed=2), rand(2, seed=3))


class _WrongWeightGrad(nnx.Linear):
    """A Linear whose weight gradient is 10% too large at (1, 0)."""

    def backward(self, grad_output, *, input_grad=True):
        dx = super().backward(grad_output, input_grad=input_grad)
        self.weight.grad = _scaled_at(self.weight.backend, self.weight.grad, (1, 0), 1.1)
        return dx


def test_module_names_the_wrong_parameter(backend):
    layer = _WrongWeightGrad(3, 2, dtype="float64")
    with pytest.raises(nnx.GradcheckError, match=r"gradient of parameter 'weight' disagrees at index \(1, 0\)"):
        nnx.gradcheck(layer, rand(4, 3, seed=1))
    model = nnx.Sequential(nnx.Linear(3, 3, dtype="float64"), nnx.Tanh(), _WrongWeightGrad(3, 2, dtype="float64"))
    with pytest.raises(nnx.GradcheckError, match=r"parameter '2.weight' disagrees at index \(1, 0\)"):
        nnx.gradcheck(model, rand(4, 3, seed=1))


def test_missing_and_misshaped_gradients(backend):
    def no_dx(x):
        y, back = F.tanh_forward(x)
        return y, lambda dy, input_grad=True: (None, ())

    with pytest.raises(nnx.GradcheckError, match="backward returned no gradient for input 0"):
        nnx.gradcheck(no_dx, rand(3, seed=1))

    def flat_dx(x):
        y, back = F.tanh_forward(x)
        return y, lambda dy, input_grad=True: (F.flatten(back(dy)[0], 0), ())

    with pytest.raises(nnx.GradcheckError, match=r"gradient of input 0 has shape \(6,\), input has \(2, 3\)"):
        nnx.gradcheck(flat_dx, rand(2, 3, seed=1))

    class NoBiasGrad(nnx.Linear):
        def backward(self, grad_output, *, input_grad=True):
            dx = super().backward(grad_output, input_grad=input_grad)
            self.bias.grad = None
            return dx

    with pytest.raises(nnx.GradcheckError, match="backward left no gradient for parameter 'bias'"):
        nnx.gradcheck(NoBiasGrad(3, 2, dtype="float64"), rand(2, 3, seed=1))


def test_requires_float64(backend):
    with pytest.raises(TypeError, match="gradcheck: inputs must be float64 for a meaningful check, got"):
        nnx.gradcheck(F.tanh_forward, rand(3, dtype="float32"))
    with pytest.raises(ValueError, match="gradcheck: give at least one input array"):
        nnx.gradcheck(F.tanh_forward)


def test_check_inputs_skips_and_labels_pass_through(backend):
    x, t = rand(4, 3, seed=1), nnx.asarray(np.array([0, 2, 1, 2]))
    assert nnx.gradcheck(nnx.CrossEntropyLoss(), x, t)  # integer labels are not checked
    target = rand(4, 3, seed=2)
    with pytest.raises(nnx.GradcheckError, match="backward returned no gradient for input 1"):
        nnx.gradcheck(nnx.MSELoss(), x, target)
    assert nnx.gradcheck(nnx.MSELoss(), x, target, check_inputs=[True, False])


def test_leaves_existing_gradients_untouched(backend):
    """Gradients already on the parameters are neither added into the check nor lost (regression)."""
    layer = nnx.Linear(3, 2, dtype="float64")
    layer(rand(4, 3, seed=5))
    layer.backward(rand(4, 2, seed=6))
    before = host(layer.weight.grad).copy()
    assert nnx.gradcheck(layer, rand(4, 3, seed=1))
    np.testing.assert_array_equal(host(layer.weight.grad), before)
    assert len(layer._tape) == 0
