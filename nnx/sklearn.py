"""scikit-learn estimators around nnx models: :class:`NNXClassifier` and :class:`NNXRegressor`.

They follow scikit-learn's estimator contract (``get_params``/``set_params``, ``clone``,
``fit``/``partial_fit``/``predict``/``score``, input validation, pickling), so an nnx network
drops into ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``. Data comes in as NumPy (or
anything ``check_array`` accepts); training runs on any nnx backend (``backend="torch"``,
``backend="cupy", device=0``), and predictions come back as NumPy.

>>> import numpy as np
>>> from nnx.sklearn import NNXClassifier
>>> X = np.random.default_rng(0).standard_normal((60, 4)); y = np.where(X[:, 0] > 0, "pos", "neg")   # tiny data
>>> clf = NNXClassifier(hidden_layer_sizes=(16,), max_iter=200, lr=1e-2, tol=1e-3, random_state=0).fit(X, y)
>>> clf.predict(X[:3]).tolist() == y[:3].tolist(), clf.predict_proba(X[:3]).shape
(True, (3, 2))

Needs scikit-learn (``pip install 'nnx-backprop[sklearn]'``); it is imported with this module.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

import nnx_backends as backends

from . import optim
from .backend import asarray, get_backend, manual_seed, to_numpy
from .containers import Sequential
from .grad_mode import no_grad
from .layers import ReLU, Sigmoid, Tanh
from .layers.linear import Identity, Linear
from .losses import CrossEntropyLoss, HuberLoss, L1Loss, MSELoss, SmoothL1Loss
from .module import Module
from .serialization import load, save

__all__ = ["NNXClassifier", "NNXRegressor"]

_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "logistic": Sigmoid, "identity": Identity}
_LOSSES = {"cross_entropy": CrossEntropyLoss, "mse": MSELoss, "l1": L1Loss, "huber": HuberLoss,
           "smooth_l1": SmoothL1Loss}
_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}


def _validate(est: BaseEstimator, X: Any, y: Any = "no_validation", reset: bool = True, **kwargs: Any) -> Any:
    """scikit-learn's input validation (``validate_data`` from 1.6, the method before)."""
    try:
        from sklearn.utils.validation import validate_data
    except ImportError:  # scikit-learn < 1.6
        return est._validate_data(X, y, reset=reset, **kwargs)
    return validate_data(est, X, y, reset=reset, **kwargs)


def _mlp(n_in: int, n_out: int, hidden: Sequence[int], activation: str) -> Module:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    sizes = [n_in, *[int(h) for h in hidden]]
    layers: list[Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [Linear(a, b), _ACTIVATIONS[activation]()]
    layers.append(Linear(sizes[-1], n_out))
    return Sequential(*layers)


class _NNXEstimator(BaseEstimator):
    """Shared machinery; see :class:`NNXClassifier` for the parameters."""

    _default_loss = "mse"

    def __init__(self, module: Module | Callable[[int, int], Module] | None = None, *,
                 hidden_layer_sizes: Sequence[int] = (100,), activation: str = "relu", loss: Any = None,
                 optimizer: str | type = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 batch_size: int | str = "auto", max_iter: int = 200, tol: float = 1e-4,
                 n_iter_no_change: int = 10, early_stopping: bool = False, validation_fraction: float = 0.1,
                 random_state: Any = None, backend: str | None = None, device: Any = None,
                 verbose: bool = False) -> None:
        self.module = module
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.loss = loss
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.backend = backend
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ building blocks
    def _backend(self) -> backends.Backend:
        if self.backend is None and self.device is None:
            return get_backend()
        return backends.get(self.backend if self.backend is not None else get_backend().name, self.device)

    def _check_params(self) -> None:
        name = type(self).__name__
        if not (isinstance(self.max_iter, int) and self.max_iter > 0):
            raise ValueError(f"{name}: max_iter must be a positive int, got {self.max_iter!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"{name}: lr must be a positive number, got {self.lr!r}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise ValueError(f"{name}: batch_size must be 'auto' or a positive int, got {self.batch_size!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"{name}: validation_fraction must be in (0, 1), got {self.validation_fraction!r}")

    def _build_module(self, n_in: int, n_out: int) -> Module:
        import copy

        b = self._backend()
        if self.module is None:
            with _on(b):
                model = _mlp(n_in, n_out, self.hidden_layer_sizes, self.activation)
        elif isinstance(self.module, Module):
            model = copy.deepcopy(self.module)
        elif callable(self.module):
            with _on(b):
                model = self.module(n_in, n_out)
            if not isinstance(model, Module):
                raise TypeError(f"{type(self).__name__}: module(n_features_in, n_outputs) must return an nnx "
                                f"Module, got {type(model).__name__}")
        else:
            raise TypeError(f"{type(self).__name__}: module must be an nnx Module, a factory "
                            f"(n_features_in, n_outputs) -> Module, or None, got {type(self.module).__name__}")
        return model.to(b)

    def _loss_fn(self) -> Module:
        loss = self._default_loss if self.loss is None else self.loss
        if isinstance(loss, str):
            if loss not in _LOSSES:
                raise ValueError(f"{type(self).__name__}: loss must be one of {sorted(_LOSSES)}, an nnx loss "
                                 f"Module or class, got {loss!r}")
            return _LOSSES[loss]()
        if isinstance(loss, Module):
            return loss
        if isinstance(loss, type) and issubclass(loss, Module):
            return loss()
        raise TypeError(f"{type(self).__name__}: loss must be a name, an nnx loss Module or class, got {loss!r}")

    def _make_optimizer(self, model: Module) -> Any:
        opt = self.optimizer
        cls = getattr(optim, _OPTIMIZERS[opt]) if isinstance(opt, str) and opt in _OPTIMIZERS else opt
        if not isinstance(cls, type):
            raise ValueError(f"{type(self).__name__}: optimizer must be one of {sorted(_OPTIMIZERS)} or an "
                             f"nnx.optim class, got {opt!r}")
        kwargs = {"lr": float(self.lr)}
        if self.weight_decay:
            kwargs["weight_decay"] = float(self.weight_decay)
        return cls(model.parameters(), **kwargs)

    def _seed(self) -> Any:
        rng = check_random_state(self.random_state)
        if self.random_state is not None:
            manual_seed(int(rng.randint(0, 2**31 - 1)))
        return rng

    # ------------------------------------------------------------------ training
    def _epoch(self, X: Any, y: Any, rng: Any) -> float:
        """One pass over ``(X, y)`` (backend arrays) in shuffled batches; the mean training loss."""
        n = int(X.shape[0])
        bs = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        b = backends.backend_of(X)
        order = b.asarray(rng.permutation(n))
        model, loss_fn, opt = self.module_, self._loss, self._optimizer
        model.train()
        total = None
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            xb, yb = b.xp.take(X, idx, axis=0), b.xp.take(y, idx, axis=0)
            loss = loss_fn(model(xb), yb)
            model.backward(loss_fn.backward())
            opt.step()
            opt.zero_grad()
            part = loss * float(xb.shape[0])
            total = part if total is None else total + part
        model.eval()
        return float(to_numpy(total)) / n  # one device read per epoch

    def _fit(self, X: Any, y: Any, incremental: bool) -> _NNXEstimator:
        rng = self._seed() if not incremental or not hasattr(self, "module_") else self._rng
        first = not (incremental and hasattr(self, "module_"))
        if first:
            self.module_ = self._build_module(self.n_features_in_, self.n_outputs_)
            self._loss = self._loss_fn().to(self.module_.backend)
            self._optimizer = self._make_optimizer(self.module_)
            self.loss_curve_, self.validation_scores_ = [], []
            self.best_loss_, self.best_validation_score_ = float("inf"), None
            self.n_iter_, self._no_improvement = 0, 0
        self._rng = rng
        Xv = yv = None
        if self.early_stopping and not incremental:
            strat = y if isinstance(self, ClassifierMixin) else None
            X, Xv, y, yv = train_test_split(X, y, test_size=self.validation_fraction, random_state=rng,
                                            stratify=strat)
        b = self.module_.backend
        Xd, yd = asarray(X, backend=b), asarray(y, backend=b, dtype=self._target_dtype(b))
        epochs = 1 if incremental else self.max_iter
        best_state = None
        for _ in range(epochs):
            loss = self._epoch(Xd, yd, rng)
            self.n_iter_ += 1
            self.loss_curve_.append(loss)
            if Xv is not None:
                score = self.score(Xv, yv)
                self.validation_scores_.append(score)
                improved = self.best_validation_score_ is None or score > self.best_validation_score_ + self.tol
                if self.best_validation_score_ is None or score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best_state = {k: self.module_.backend.xp.asarray(v, copy=True)
                                  for k, v in self.module_.state_dict().items()}
            else:
                improved = loss < self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, loss)
            self._no_improvement = 0 if improved else self._no_improvement + 1
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
            if not incremental and self._no_improvement >= self.n_iter_no_change:
                break
        else:
            if not incremental:
                warnings.warn(f"{type(self).__name__}: max_iter ({self.max_iter}) reached and the optimization "
                              "has not converged yet", ConvergenceWarning, stacklevel=3)
        if best_state is not None:
            self.module_.load_state_dict(best_state)
        return self

    # ------------------------------------------------------------------ inference
    def _forward(self, X: Any) -> Any:
        """The network's outputs for ``X`` (host), as a host array (evaluated in chunks of 4096)."""
        model = self.module_
        b = model.backend
        model.eval()
        outs = []
        with no_grad():
            for start in range(0, int(X.shape[0]), 4096):
                outs.append(model(asarray(X[start:start + 4096], backend=b)))
        y = outs[0] if len(outs) == 1 else b.xp.concat(outs, axis=0)
        return to_numpy(y)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """The estimator's state with the fitted network as the bytes of an ``nnx.save`` archive.

        No array of the fitted network goes through pickle; the network is rebuilt from the
        estimator's parameters when unpickled (the optimizer's moments are not kept: a
        ``partial_fit`` after unpickling starts a fresh optimizer).
        """
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        model = state.pop("module_", None)
        for private in ("_loss", "_optimizer"):
            state.pop(private, None)
        if model is not None:
            state["_module_archive"] = _archive_bytes(model)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the fitted network from the estimator's parameters and load the archived weights."""
        state = dict(state)
        archive = state.pop("_module_archive", None)
        if hasattr(super(), "__setstate__"):
            super().__setstate__(state)
        else:
            self.__dict__.update(state)
        if archive is not None:
            self.module_ = self._build_module(self.n_features_in_, self.n_outputs_)
            _load_archive(self.module_, archive)
            self.module_.eval()
            self._loss = self._loss_fn().to(self.module_.backend)
            self._optimizer = self._make_optimizer(self.module_)


class _on:
    """Make ``backend`` current while a module is built (a context manager)."""

    def __init__(self, backend: backends.Backend) -> None:
        from .backend import use_backend

        self._cm = use_backend(backend)

    def __enter__(self) -> Any:
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._cm.__exit__(*exc)


def _archive_bytes(model: Module) -> bytes:
    fd, path = tempfile.mkstemp(suffix=".nnx")
    os.close(fd)
    try:
        save(model, path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def _load_archive(model: Module, data: bytes) -> None:
    fd, path = tempfile.mkstemp(suffix=".nnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        load(path, model)
    finally:
        os.unlink(path)


class NNXClassifier(ClassifierMixin, _NNXEstimator):
    """A scikit-learn classifier that trains an nnx network (cross-entropy on its logits).

    Args:
        module: the network: an nnx Module (deep-copied at ``fit``), a factory
            ``module(n_features_in, n_classes) -> Module``, or None for an MLP of
            ``hidden_layer_sizes`` with ``activation`` (as ``MLPClassifier``). Its output is one logit
            per class.
        loss: None (cross-entropy), a name (``"cross_entropy"``), or an nnx loss Module or class
            taking ``(logits, class indices)``.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"`` or an ``nnx.optim`` class;
            ``lr`` and ``weight_decay`` are passed to it.
        batch_size: ``"auto"`` (``min(200, n_samples)``) or an int. ``max_iter``: epochs.
        tol, n_iter_no_change: stop when the training loss (or, with ``early_stopping``, the
            validation accuracy on a stratified ``validation_fraction`` of the data) has not
            improved by ``tol`` for ``n_iter_no_change`` epochs; early stopping restores the best
            weights. A ``ConvergenceWarning`` says when ``max_iter`` ran out first.
        random_state: seeds weight initialisation (through ``nnx.manual_seed``, which seeds every
            backend's generator) and the shuffling.
        backend, device: where to train (default: the current backend); data is NumPy in and out.

    Attributes after ``fit``: ``classes_`` (the labels, any type ``LabelEncoder`` sorts: strings
    work), ``n_features_in_``, ``module_`` (the trained network), ``loss_curve_``, ``n_iter_``,
    ``validation_scores_``. NaN or infinite features raise ValueError (``check_array``).

    >>> import numpy as np, warnings
    >>> from sklearn.model_selection import GridSearchCV
    >>> from nnx.sklearn import NNXClassifier
    >>> X = np.random.default_rng(0).standard_normal((40, 3)); y = (X[:, 0] > 0).astype(int)   # tiny data
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")                # ConvergenceWarning: 30 epochs are few
    ...     search = GridSearchCV(NNXClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0),
    ...                           {"lr": [1e-3, 1e-2]}, cv=2).fit(X, y)
    >>> search.best_params_["lr"] in (1e-3, 1e-2)
    True
    """

    _default_loss = "cross_entropy"

    def _target_dtype(self, b: backends.Backend) -> Any:
        return b.xp.int64

    def _encode(self, y: Any) -> Any:
        known = self.classes_
        idx = known.searchsorted(y)
        bad = (idx >= len(known)) | (known[idx.clip(0, len(known) - 1)] != y)
        if bad.any():
            raise ValueError(f"{type(self).__name__}: labels {sorted(set(y[bad].tolist()))[:5]} are not in "
                             f"classes_ {known.tolist()}")
        return idx

    def fit(self, X: Any, y: Any) -> NNXClassifier:
        """Train a new network on ``X`` ``(n_samples, n_features)`` and labels ``y`` ``(n_samples,)``."""
        self._check_params()
        for attr in ("module_", "classes_"):
            self.__dict__.pop(attr, None)
        X, y = _validate(self, X, y, reset=True, dtype=("float32", "float64"))
        return self._fit_classes(X, y, None, incremental=False)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> NNXClassifier:
        """One epoch over ``(X, y)``; the first call fixes ``classes_`` (from ``classes`` or ``y``)."""
        self._check_params()
        first = not hasattr(self, "module_")
        X, y = _validate(self, X, y, reset=first, dtype=("float32", "float64"))
        return self._fit_classes(X, y, classes if first else None, incremental=True)

    def _fit_classes(self, X: Any, y: Any, classes: Any, incremental: bool) -> NNXClassifier:
        check_classification_targets(y)
        if y.ndim != 1:
            raise ValueError(f"{type(self).__name__}: expected 1-D labels y of shape (n_samples,), got shape "
                             f"{y.shape}; multi-output classification is not supported")
        if not hasattr(self, "classes_"):
            self.classes_ = LabelEncoder().fit(y if classes is None else classes).classes_
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__}: needs samples of at least 2 classes, got 1 class "
                                 f"({self.classes_.tolist()})")
            self.n_outputs_ = len(self.classes_)
        return self._fit(X, self._encode(y), incremental)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n_samples, n_classes)`` (softmax of the logits), columns in ``classes_`` order."""
        check_is_fitted(self, "module_")
        X = _validate(self, X, reset=False, dtype=("float32", "float64"))
        return softmax(self._forward(X).astype("float64"), axis=1)

    def predict_log_proba(self, X: Any) -> Any:
        """Log of :meth:`predict_proba`."""
        check_is_fitted(self, "module_")
        X = _validate(self, X, reset=False, dtype=("float32", "float64"))
        return log_softmax(self._forward(X).astype("float64"), axis=1)

    def predict(self, X: Any) -> Any:
        """The most probable class label of each sample, ``(n_samples,)``."""
        check_is_fitted(self, "module_")
        X = _validate(self, X, reset=False, dtype=("float32", "float64"))
        return self.classes_[self._forward(X).argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = False
        return tags

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"multioutput": False, "binary_only": False}


class NNXRegressor(RegressorMixin, _NNXEstimator):
    """A scikit-learn regressor that trains an nnx network (mean squared error by default).

    The same parameters as :class:`NNXClassifier`; ``module(n_features_in, n_targets)`` when a
    factory. ``y`` may be ``(n_samples,)`` (predictions are then 1-D) or ``(n_samples, n_targets)``.
    Early stopping watches the validation R^2.

    >>> import numpy as np, warnings
    >>> from nnx.sklearn import NNXRegressor
    >>> X = np.random.default_rng(0).standard_normal((40, 3)); y = X @ np.array([1.0, -2.0, 0.5])   # tiny data
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")                # ConvergenceWarning: 100 epochs are few
    ...     reg = NNXRegressor(hidden_layer_sizes=(32,), max_iter=100, lr=1e-2, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    """

    _default_loss = "mse"

    def _target_dtype(self, b: backends.Backend) -> Any:
        return self.module_.state_dict()[next(iter(self.module_.state_dict()))].dtype

    def fit(self, X: Any, y: Any) -> NNXRegressor:
        """Train a new network on ``X`` ``(n_samples, n_features)`` and targets ``y``."""
        self._check_params()
        self.__dict__.pop("module_", None)
        X, y = _validate(self, X, y, reset=True, dtype=("float32", "float64"), y_numeric=True, multi_output=True)
        return self._fit_targets(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> NNXRegressor:
        """One epoch over ``(X, y)`` (builds the network on the first call)."""
        self._check_params()
        first = not hasattr(self, "module_")
        X, y = _validate(self, X, y, reset=first, dtype=("float32", "float64"), y_numeric=True, multi_output=True)
        return self._fit_targets(X, y, incremental=True)

    def _fit_targets(self, X: Any, y: Any, incremental: bool) -> NNXRegressor:
        one_d = y.ndim == 1
        if hasattr(self, "module_"):
            if one_d != self._y_1d or (not one_d and y.shape[1] != self.n_outputs_):
                raise ValueError(f"{type(self).__name__}.partial_fit: y has shape {y.shape}, the network was built "
                                 f"for {self.n_outputs_} target(s)")
        else:
            self._y_1d = one_d
            self.n_outputs_ = 1 if one_d else int(y.shape[1])
        return self._fit(X, y.reshape(-1, 1) if one_d else y, incremental)

    def predict(self, X: Any) -> Any:
        """Predictions ``(n_samples,)`` (or ``(n_samples, n_targets)`` for 2-D training targets)."""
        check_is_fitted(self, "module_")
        X = _validate(self, X, reset=False, dtype=("float32", "float64"))
        out = self._forward(X).astype("float64")
        return out.ravel() if self._y_1d else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"multioutput": True}
