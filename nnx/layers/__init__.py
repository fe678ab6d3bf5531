"""Layers: Modules that own parameters and call the functional kernels."""

from .activation import ELU, GELU, Hardtanh, LeakyReLU, LogSoftmax, Mish, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from .linear import Dropout, Flatten, Identity, Linear

__all__ = [
    "ELU", "GELU", "Dropout", "Flatten", "Hardtanh", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "Mish",
    "ReLU", "SiLU", "Sigmoid", "Softmax", "Softplus", "Tanh",
]
