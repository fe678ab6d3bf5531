"""nnx: neural networks with explicit backpropagation, written once against the Array API
standard, running on NumPy, CuPy, PyTorch tensors, array-api-strict and JAX.

>>> import numpy as np
>>> import nnx
>>> nnx.set_backend("numpy")                                   # or "cupy", "torch", "jax", ...
<nnx backend 'numpy' device=cpu>
>>> model = nnx.Sequential(nnx.Linear(784, 256), nnx.ReLU(), nnx.Linear(256, 10))
>>> loss_fn = nnx.CrossEntropyLoss()
>>> opt = nnx.optim.Adam(model.parameters(), lr=1e-3)
>>> x, y = nnx.asarray(np.zeros((8, 784))), nnx.asarray(np.arange(8))
>>> loss = loss_fn(model(x), y)                                # forward
>>> dx = model.backward(loss_fn.backward()); opt.step(); opt.zero_grad()   # backward, update
"""

from nnx_backends import BackendUnavailable
from nnx_backends.threads import get_num_threads, set_num_threads

from . import amp, callbacks, data, functional, init, launches, metrics, optim

# isort: split
from . import distributed, parallel  # noqa: F401  (multi-process training on MPI)

# isort: split
from . import onnx  # noqa: F401  (ONNX export; imports the onnx package only when used)

# isort: split
from . import serialization as _serialization
from . import training as _training
from .backend import (
    asarray,
    available_backends,
    backend_names,
    get_backend,
    get_default_dtype,
    manual_seed,
    set_backend,
    set_default_dtype,
    synchronize,
    to_numpy,
    use_backend,
)
from .compiled import compile_step
from .containers import ModuleDict, ModuleList, Sequential
from .dlpack import from_dlpack
from .errors import BackendMismatchError, NotRecordedError
from .grad_mode import enable_grad, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from .launches import count_launches
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers_all
from .losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    GaussianNLLLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MarginRankingLoss,
    MSELoss,
    NLLLoss,
    PoissonNLLLoss,
    SmoothL1Loss,
    TripletMarginLoss,
)
from .module import IncompatibleKeys, Module, Parameter
from .optim import clip_grad_norm_, clip_grad_value_
from .serialization import *  # noqa: F401,F403  (save, load, checkpoints)
from .summary import summary
from .training import *  # noqa: F401,F403  (fit, evaluate, predict)

__version__ = "0.1.0"

__all__ = [
    *_layers_all,
    "BCELoss", "BCEWithLogitsLoss", "BackendMismatchError", "BackendUnavailable", "CrossEntropyLoss",
    "GradcheckError", "HuberLoss", "IncompatibleKeys", "L1Loss", "MSELoss", "Module", "ModuleDict", "ModuleList",
    "NLLLoss", "NotRecordedError", "Parameter", "Sequential", "SmoothL1Loss", "asarray", "available_backends",
    "backend_names", "clip_grad_norm_", "clip_grad_value_", "enable_grad", "functional", "get_backend",
    "get_default_dtype", "gradcheck", "init", "is_grad_enabled", "manual_seed", "no_grad", "optim",
    "set_backend", "set_default_dtype", "summary", "synchronize", "to_numpy", "use_backend",
    "callbacks", "data", "metrics", "amp", "launches", "count_launches", "compile_step",
    *_serialization.__all__, *_training.__all__,
]
__all__ += ["CosineEmbeddingLoss", "GaussianNLLLoss", "KLDivLoss", "MarginRankingLoss", "PoissonNLLLoss",
            "TripletMarginLoss"]
__all__ += ["get_num_threads", "set_num_threads"]
__all__ += ["from_dlpack"]
