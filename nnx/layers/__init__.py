"""Layers: Modules that own parameters and call the functional kernels."""

from . import attention as _attention
from . import conv as _conv
from . import recurrent as _recurrent
from . import transformer as _transformer
from .activation import ELU, GELU, Hardtanh, LeakyReLU, LogSoftmax, Mish, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .attention import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .linear import Dropout, Flatten, Identity, Linear
from .recurrent import *  # noqa: F401,F403
from .transformer import *  # noqa: F401,F403

__all__ = [
    "ELU", "GELU", "Dropout", "Flatten", "Hardtanh", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "Mish",
    "ReLU", "SiLU", "Sigmoid", "Softmax", "Softplus", "Tanh", *_conv.__all__, *_recurrent.__all__,
    *_attention.__all__, *_transformer.__all__,
]
