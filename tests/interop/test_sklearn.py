"""nnx.sklearn: scikit-learn's estimator checks, Pipeline/GridSearchCV, pickling, backends, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import nnx

sklearn = pytest.importorskip("sklearn", reason="nnx.sklearn needs scikit-learn: pip install 'nnx-backprop[sklearn]'")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from nnx.sklearn import NNXClassifier, NNXRegressor  # noqa: E402


def _quick(cls, **kw):
    return cls(hidden_layer_sizes=(16,), max_iter=kw.pop("max_iter", 60), lr=kw.pop("lr", 1e-2), random_state=0,
               **kw)


@parametrize_with_checks([_quick(NNXClassifier), _quick(NNXRegressor)])
def test_sklearn_estimator_checks(estimator, check):
    with nnx.use_backend("numpy"):
        check(estimator)


def _blobs(n=120, seed=0):
    return make_classification(n_samples=n, n_features=6, n_informative=4, n_classes=3, random_state=seed)


def test_trains_on_every_backend_from_numpy(backend):
    X, y = _blobs()
    clf = _quick(NNXClassifier, backend=backend.name, max_iter=80).fit(X, y)
    assert clf.module_.backend.name == backend.name
    proba = clf.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert clf.score(X, y) > 0.8
    reg = _quick(NNXRegressor, backend=backend.name, max_iter=150)
    Xr, yr = make_regression(n_samples=100, n_features=5, noise=0.1, random_state=0)
    yr = yr / yr.std()
    assert reg.fit(Xr, yr).score(Xr, yr) > 0.9
    assert reg.predict(Xr).shape == (100,)


def test_pipeline_and_grid_search():
    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    pipe = make_pipeline(StandardScaler(), _quick(NNXClassifier, max_iter=15))
    search = GridSearchCV(pipe, {"nnxclassifier__lr": [1e-3, 1e-2], "nnxclassifier__hidden_layer_sizes": [(16,)]},
                          cv=2).fit(X, y)
    assert search.best_params_["nnxclassifier__lr"] in (1e-3, 1e-2)
    assert search.best_score_ > 0.7
    assert search.predict(X[:5]).shape == (5,)


def test_string_labels_and_classes():
    X, y = _blobs()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = _quick(NNXClassifier).fit(X, names)
    assert clf.classes_.tolist() == ["cat", "dog", "emu"]
    assert set(clf.predict(X)) <= {"cat", "dog", "emu"}
    assert (clf.predict(X) == names).mean() > 0.8
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X[:3], ["cat", "dog", "yak"])


def test_nan_features_raise_like_sklearn():
    X, y = _blobs()
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _quick(NNXClassifier).fit(X, y)
    clf = _quick(NNXClassifier).fit(*_blobs())
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(X)


def test_one_class_is_a_clear_error():
    X, _ = _blobs()
    with pytest.raises(ValueError, match="at least 2 classes"):
        _quick(NNXClassifier).fit(X, np.zeros(len(X), dtype=int))


def test_pickle_goes_through_the_nnx_archive(backend):
    X, y = _blobs()
    clf = _quick(NNXClassifier, backend=backend.name).fit(X, y)
    state = clf.__getstate__()
    assert "module_" not in state and state["_module_archive"][:2] == b"PK"  # a zip (.nnx) archive
    again = pickle.loads(pickle.dumps(clf))
    assert again.module_.backend.name == backend.name
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    again.partial_fit(X, y)  # training goes on after unpickling (a fresh optimizer)


def test_clone_and_params():
    clf = _quick(NNXClassifier, optimizer="sgd")
    params = clf.get_params()
    assert params["optimizer"] == "sgd" and params["hidden_layer_sizes"] == (16,)
    c = clone(clf.set_params(lr=0.05))
    assert c.lr == 0.05 and not hasattr(c, "module_")


def test_module_template_and_factory():
    X, y = _blobs()
    template = nnx.Sequential(nnx.Linear(6, 12), nnx.Tanh(), nnx.Linear(12, 3))
    clf = NNXClassifier(template, max_iter=50, lr=1e-2, random_state=0).fit(X, y)
    assert clf.module_ is not template and clf.score(X, y) > 0.7
    factory_calls = []

    def factory(n_in, n_out):
        factory_calls.append((n_in, n_out))
        return nnx.Sequential(nnx.Linear(n_in, 8), nnx.ReLU(), nnx.Linear(8, n_out))

    NNXClassifier(factory, max_iter=5, random_state=0).fit(X, y)
    assert factory_calls == [(6, 3)]
    with pytest.raises(TypeError, match="must return an nnx Module"):
        NNXClassifier(lambda a, b: "nope", max_iter=2).fit(X, y)


def test_partial_fit_and_early_stopping():
    X, y = _blobs(200)
    clf = _quick(NNXClassifier)
    for _ in range(3):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    es = _quick(NNXClassifier, early_stopping=True, n_iter_no_change=3, max_iter=200).fit(X, y)
    assert es.n_iter_ < 200 and len(es.validation_scores_) == es.n_iter_
    assert es.best_validation_score_ == max(es.validation_scores_)


def test_random_state_reproducible():
    X, y = _blobs()
    a = _quick(NNXClassifier, max_iter=5).fit(X, y).predict_proba(X)
    b = _quick(NNXClassifier, max_iter=5).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_regressor_multi_output_and_losses():
    X, Y = make_regression(n_samples=80, n_features=4, n_targets=2, random_state=0)
    Y = Y / Y.std(axis=0)
    reg = _quick(NNXRegressor, loss="huber", max_iter=150).fit(X, Y)
    assert reg.predict(X).shape == (80, 2) and reg.score(X, Y) > 0.8
    with pytest.raises(ValueError, match="loss must be one of"):
        _quick(NNXRegressor, loss="nope").fit(X, Y)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        _quick(NNXRegressor, optimizer="nope").fit(X, Y)
