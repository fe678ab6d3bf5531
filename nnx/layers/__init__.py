"""Layers: Modules that own parameters and call the functional kernels."""

from . import attention as _attention
from . import combinators as _combinators
from . import convolution as _convolution
from . import dropout as _dropout
from . import normalization as _normalization
from . import pooling as _pooling
from . import recurrent as _recurrent
from . import transformer as _transformer
from . import unpooling as _unpooling
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
from .attention import *  # noqa: F401,F403
from .combinators import *  # noqa: F401,F403
from .convolution import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .graph import Graph
from .linear import Flatten, Identity, Linear
from .normalization import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .recurrent import *  # noqa: F401,F403
from .shape import PixelShuffle, PixelUnshuffle, Unflatten
from .sync_batchnorm import SyncBatchNorm
from .transformer import *  # noqa: F401,F403
from .unpooling import *  # noqa: F401,F403
from .upsample import Upsample

__all__ = [
    "ELU", "GELU", "Flatten", "Graph", "Hardtanh", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "Mish",
    "PReLU", "PixelShuffle", "PixelUnshuffle", "ReLU", "SiLU", "Sigmoid", "Softmax", "Softplus", "SyncBatchNorm",
    "Tanh", "Unflatten", "Upsample", *_attention.__all__, *_combinators.__all__, *_convolution.__all__,
    *_dropout.__all__, *_normalization.__all__, *_pooling.__all__, *_recurrent.__all__, *_transformer.__all__,
]
__all__ += _unpooling.__all__
