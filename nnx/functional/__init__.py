"""Stateless kernels. Each op ``name_forward(...)`` returns ``(output, backward)``, where
``backward(dy, input_grad=True)`` returns ``(dx, parameter_grads)``; ``name(...)`` is the plain
functional form that returns only the output (as ``torch.nn.functional``).

Everything here is written against the Array API standard: the namespace comes from the inputs,
and what the standard lacks comes from the backend adapter.
"""

from .activation import (
    elu, elu_forward, gelu, gelu_forward, hardtanh, hardtanh_forward, leaky_relu, leaky_relu_forward,
    log_softmax, log_softmax_forward, mish, mish_forward, relu, relu_forward, sigmoid, sigmoid_forward,
    silu, silu_forward, softmax, softmax_forward, softplus, softplus_forward, tanh, tanh_forward,
)
from .linear import dropout, dropout_forward, flatten, flatten_forward, linear, linear_forward
from .loss import (
    binary_cross_entropy, binary_cross_entropy_forward, binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_forward, cross_entropy, cross_entropy_forward, huber_loss,
    huber_loss_forward, l1_loss, l1_loss_forward, mse_loss, mse_loss_forward, nll_loss, nll_loss_forward,
    smooth_l1_loss, smooth_l1_loss_forward,
)
from .conv import *  # noqa: F401,F403  (convolution, pooling, normalisation kernels)
from .recurrent import *  # noqa: F401,F403  (embedding and recurrent kernels)
