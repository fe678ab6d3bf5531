"""The high-level loop: nnx.fit on scikit-learn's digits, with validation, metrics, early stopping,
checkpoints, a CSV log, a learning-curve plot, and an exact resume.

    python examples/fit_digits.py                          # NumPy on the CPU
    python examples/fit_digits.py --backend cupy           # the same on a CUDA GPU
    python examples/fit_digits.py --quick                  # 3 epochs (a smoke test)
    python examples/fit_digits.py --resume                 # continue the last run from runs/digits/last.nnx

The step inside fit is nnx's explicit one (forward, loss, model.backward, optimizer.step); fit adds
the progress bar, device-side metrics, callbacks and checkpoints around it.
"""

from __future__ import annotations

import argparse
import os
import sys

import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the examples' shared CLI helper
from example_cli import add_runtime_args, description, setup_runtime  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    """Run the example; returns the test accuracy of the final model."""
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_runtime_args(parser)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 epochs, for a smoke test")
    parser.add_argument("--out", default=os.path.join("runs", "digits"))
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.nnx")
    parser.add_argument("--plot", action="store_true", help="write <out>/curves.png (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    args = parser.parse_args(argv)
    epochs = 3 if args.quick else args.epochs

    setup_runtime(args)
    nnx.manual_seed(0)

    # data: host arrays; batches go to the device one transfer at a time
    X, y = nnx.data.load_digits()
    X_train, X_test, y_train, y_test = nnx.data.train_test_split(X, y, test_size=0.2, seed=0, stratify=y)
    X_train, X_val, y_train, y_val = nnx.data.train_test_split(X_train, y_train, test_size=0.15, seed=1)
    train = nnx.data.DataLoader((X_train, y_train), batch_size=64, shuffle=True)
    val = nnx.data.DataLoader((X_val, y_val), batch_size=256)
    test = nnx.data.DataLoader((X_test, y_test), batch_size=256)

    model = nnx.Sequential(nnx.Linear(64, 128), nnx.ReLU(), nnx.Dropout(0.2), nnx.Linear(128, 10))
    loss_fn = nnx.CrossEntropyLoss()
    opt = nnx.optim.Adam(model.parameters(), lr=3e-3)
    sched = nnx.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)

    callbacks = [
        nnx.callbacks.EarlyStopping(monitor="val_loss", patience=6, restore_best_weights=True),
        nnx.callbacks.ModelCheckpoint(args.out, monitor="val_loss"),          # best.nnx and last.nnx
        nnx.callbacks.CSVLogger(os.path.join(args.out, "log.csv"), append=args.resume),
    ]
    os.makedirs(args.out, exist_ok=True)
    last = os.path.join(args.out, "last.nnx")
    history = nnx.fit(model, loss_fn, opt, train, epochs=epochs, val_loader=val,
                      metrics=["accuracy", "f1"], callbacks=callbacks, scheduler=sched, quiet=args.quiet,
                      resume_from=last if args.resume and os.path.exists(last) else None)

    # One "best": the epoch of lowest val_loss, which EarlyStopping restored and ModelCheckpoint saved.
    epoch, best = history.best("val_loss")
    print(f"best epoch: {epoch} (val_loss {best:.4f}); the model holds its weights, saved as {args.out}/best.nnx")
    result = nnx.evaluate(model, loss_fn, test, metrics=["accuracy", "f1", "top3_accuracy"])
    print("test:", result)

    # weights alone: a pickle-free file that loads on any backend
    fresh = nnx.Sequential(nnx.Linear(64, 128), nnx.ReLU(), nnx.Dropout(0.2), nnx.Linear(128, 10))
    nnx.load(os.path.join(args.out, "best.nnx"), model=fresh)
    reloaded = nnx.evaluate(fresh, loss_fn, test, metrics=["accuracy"])["accuracy"]
    print(f"best.nnx reloaded into a fresh model: test accuracy {reloaded:.4f}")
    if args.plot:
        history.plot(os.path.join(args.out, "curves.png"))
        print(f"learning curves: {args.out}/curves.png")
    return result["accuracy"]


if __name__ == "__main__":
    main()
