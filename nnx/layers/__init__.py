"""Layers: Modules that own parameters and call the functional kernels."""

from . import convolution as _convolution
from . import dropout as _dropout
from . import normalization as _normalization
from . import pooling as _pooling
from . import recurrent as _recurrent
from .activation import (
    ELU,
    GELU,
    Hardtanh,
    LeakyReLU,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .convolution import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .linear import Flatten, Identity, Linear
from .normalization import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .recurrent import *  # noqa: F401,F403
from .shape import PixelShuffle, PixelUnshuffle, Unflatten
from .sync_batchnorm import SyncBatchNorm
from .upsample import Upsample

__all__ = [
    "ELU", "GELU", "Flatten", "Hardtanh", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "Mish",
    "ReLU", "SiLU", "Sigmoid", "Softmax", "Softplus", "Tanh", *_convolution.__all__, *_dropout.__all__,
    *_normalization.__all__, *_pooling.__all__, *_recurrent.__all__,
    "SyncBatchNorm",
]
__all__ += ["PReLU", "PixelShuffle", "PixelUnshuffle", "Unflatten", "Upsample"]
