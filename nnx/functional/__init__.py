"""Stateless kernels. Each op ``name_forward(...)`` returns ``(output, backward)``, where
``backward(dy, input_grad=True)`` returns ``(dx, parameter_grads)``; ``name(...)`` is the plain
functional form that returns only the output (as ``torch.nn.functional``).

Everything here is written against the Array API standard: the namespace comes from the inputs,
and what the standard lacks comes from the backend adapter.
"""

from . import activation as _activation
from . import attention as _attention
from . import convolution as _convolution
from . import convolution3d as _convolution3d
from . import dropout as _dropout
from . import embedding as _embedding
from . import interpolate as _interpolate
from . import linear as _linear
from . import loss as _loss
from . import loss_extra as _loss_extra
from . import normalization as _normalization
from . import normalization_extra as _normalization_extra
from . import padding as _padding
from . import pooling as _pooling
from . import pooling_extra as _pooling_extra
from . import recurrent as _recurrent
from . import shape as _shape
from . import unpooling as _unpooling
from .activation import *  # noqa: F403
from .attention import *  # noqa: F403  (scaled dot-product attention, positions)
from .convolution import *  # noqa: F403
from .convolution3d import *  # noqa: F403  (conv3d as kd 2-D convolutions)
from .dropout import *  # noqa: F403
from .embedding import *  # noqa: F403
from .interpolate import *  # noqa: F403
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .loss_extra import *  # noqa: F403  (KL, Poisson/Gaussian NLL, embedding and ranking losses)
from .normalization import *  # noqa: F403
from .normalization_extra import *  # noqa: F403  (instance_norm, rms_norm)
from .padding import *  # noqa: F403
from .pooling import *  # noqa: F403
from .pooling_extra import *  # noqa: F403  (1-D, 3-D and adaptive max pooling)
from .recurrent import *  # noqa: F403  (embedding and recurrent kernels)
from .shape import *  # noqa: F403  (unflatten, pixel_shuffle, pixel_unshuffle)
from .unpooling import *  # noqa: F403  (max_unpool2d)

__all__ = [*_activation.__all__, *_linear.__all__, *_loss.__all__, *_convolution.__all__, *_pooling.__all__,
           *_normalization.__all__, *_dropout.__all__, *_recurrent.__all__]
__all__ += _embedding.__all__
__all__ += _loss_extra.__all__ + _interpolate.__all__ + _padding.__all__ + _shape.__all__ + _attention.__all__
__all__ += _normalization_extra.__all__
__all__ += _pooling_extra.__all__
__all__ += _convolution3d.__all__
__all__ += _unpooling.__all__
