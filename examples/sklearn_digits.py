"""Tune an nnx network with scikit-learn: GridSearchCV over an NNXClassifier in a Pipeline, on the digits.

    python examples/sklearn_digits.py                     # NumPy on the CPU
    python examples/sklearn_digits.py --backend torch     # the same search, training on torch

``nnx.sklearn.NNXClassifier`` is a scikit-learn estimator (``fit``, ``predict_proba``, ``score``,
``get_params``), so it sits in a ``Pipeline`` after a ``StandardScaler`` and ``GridSearchCV``
clones and refits it like any other. The grid is small (hidden sizes x learning rates, 3-fold) so
the whole search runs in well under a minute; the best estimator is then scored on a held-out
test set. Data is NumPy throughout; training runs on the chosen backend.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the examples' shared CLI helper
from example_cli import add_runtime_args, description, setup_runtime  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_runtime_args(parser)
    parser.add_argument("--max-iter", type=int, default=30, help="Epochs per fit (default 30).")
    parser.add_argument("--cv", type=int, default=3, help="Cross-validation folds (default 3).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    setup_runtime(args)
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import GridSearchCV, train_test_split
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        from nnx.sklearn import NNXClassifier
    except ImportError:
        print(f"{sys.argv[0] or 'sklearn_digits'}: needs scikit-learn: pip install 'nnx-backprop[sklearn]'",
              file=sys.stderr)
        raise SystemExit(2) from None

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=args.seed, stratify=y)
    pipe = Pipeline([
        ("scale", StandardScaler()),
        ("net", NNXClassifier(max_iter=args.max_iter, batch_size=64, random_state=args.seed,
                              backend=nnx.get_backend().name, device=args.device)),
    ])
    grid = {"net__hidden_layer_sizes": [(32,), (64, 32)], "net__lr": [1e-3, 1e-2]}
    search = GridSearchCV(pipe, grid, cv=args.cv, n_jobs=1)
    start = time.perf_counter()
    with warnings.catch_warnings():  # a short max_iter on purpose: no "not converged" note per fit
        warnings.filterwarnings("ignore", message=".*max_iter .* reached")
        search.fit(X_train, y_train)
    elapsed = time.perf_counter() - start
    for params, mean, std in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"],
                                 search.cv_results_["std_test_score"]):
        short = {k.removeprefix("net__"): v for k, v in params.items()}
        print(f"  {short}: cv accuracy {mean:.4f} +- {std:.4f}")
    test_accuracy = float(search.score(X_test, y_test))
    best = {k.removeprefix("net__"): v for k, v in search.best_params_.items()}
    n_candidates = len(search.cv_results_["params"])
    print(f"best {best} (cv {search.best_score_:.4f}); test accuracy {test_accuracy:.4f}; "
          f"{n_candidates} candidates x {args.cv} folds in {elapsed:.1f} s on {nnx.get_backend().name}")
    return {"best_params": best, "cv_accuracy": float(search.best_score_), "test_accuracy": test_accuracy,
            "seconds": elapsed}


if __name__ == "__main__":
    main()
