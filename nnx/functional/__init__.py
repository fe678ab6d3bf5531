"""Stateless kernels. Each op ``name_forward(...)`` returns ``(output, backward)``, where
``backward(dy, input_grad=True)`` returns ``(dx, parameter_grads)``; ``name(...)`` is the plain
functional form that returns only the output (as ``torch.nn.functional``).

Everything here is written against the Array API standard: the namespace comes from the inputs,
and what the standard lacks comes from the backend adapter.
"""

from . import activation as _activation
from . import conv as _conv
from . import linear as _linear
from . import loss as _loss
from . import recurrent as _recurrent
from .activation import *  # noqa: F403
from .conv import *  # noqa: F403  (convolution, pooling, normalisation kernels)
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .recurrent import *  # noqa: F403  (embedding and recurrent kernels)

__all__ = [*_activation.__all__, *_linear.__all__, *_loss.__all__, *_conv.__all__, *_recurrent.__all__]
from . import attention as _attention  # noqa: E402
from .attention import *  # noqa: E402,F403

__all__ += _attention.__all__
