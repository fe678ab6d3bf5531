"""Train the digits CNN briefly, export it to ONNX, run the file with onnxruntime and compare predictions.

    python examples/export_onnx.py                        # NumPy on the CPU, 3 epochs
    python examples/export_onnx.py --backend torch --epochs 5 --out digits_cnn.onnx

The model is examples/cnn_digits.py's (conv-BN-ReLU blocks, pooling, dropout, linear). After
training, ``nnx.onnx.export`` writes its eval-mode function with a dynamic batch axis;
onnxruntime (CPU) runs the file on the whole test set and the script prints how many predicted
classes agree with nnx and the largest logit difference. Finally ``nnx.onnx.load_weights`` reads
the initialisers back into a fresh model, which must predict exactly as the trained one. Needs
``pip install 'nnx-backprop[onnx]'`` (onnx and onnxruntime) and scikit-learn for the data.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time

import numpy as np

import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the examples' shared CLI helper
from cnn_digits import build_model, load_data, random_shift  # noqa: E402
from example_cli import add_runtime_args, description, setup_runtime  # noqa: E402


def require(package: str) -> object:
    """Import ``package`` or end with one line on stderr and exit code 2."""
    try:
        return importlib.import_module(package)
    except ImportError:
        print(f"{sys.argv[0] or 'export_onnx'}: needs the {package!r} package: pip install 'nnx-backprop[onnx]'",
              file=sys.stderr)
        raise SystemExit(2) from None


def train(model: nnx.Module, x_train: np.ndarray, y_train: np.ndarray, epochs: int, batch_size: int, lr: float,
          rng: np.random.Generator) -> None:
    """Explicit forward / backward / step, as examples/cnn_digits.py."""
    loss_fn = nnx.CrossEntropyLoss(label_smoothing=0.05)
    optimizer = nnx.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    backend = nnx.get_backend()
    xp, n = backend.xp, len(x_train)
    ys = nnx.asarray(y_train)
    model.train()
    for _ in range(epochs):
        xs = nnx.asarray(random_shift(x_train, rng))
        order = backend.permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i:min(i + batch_size, n)]
            loss_fn(model(xp.take(xs, idx, axis=0)), xp.take(ys, idx, axis=0))
            model.backward(loss_fn.backward(), input_grad=False)
            optimizer.step()
            optimizer.zero_grad()
    model.eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_runtime_args(parser)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (13 or later; default 17).")
    parser.add_argument("--out", default=None, help="Where to write the .onnx file (default: a temporary file).")
    args = parser.parse_args(argv)

    setup_runtime(args)
    require("onnx")
    ort = require("onnxruntime")
    import nnx.onnx

    nnx.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.seed)
    model = build_model()
    start = time.perf_counter()
    train(model, x_train, y_train, args.epochs, args.batch_size, args.lr, rng)
    elapsed = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or os.path.join(tmp, "digits_cnn.onnx")
        nnx.onnx.export(model, nnx.asarray(x_test[:1]), path, opset_version=args.opset, input_names=["images"],
                        output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        size = os.path.getsize(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the file keeps every buffer (num_batches_tracked): no "unused" notes
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        (onnx_logits,) = session.run(None, {"images": x_test})   # the whole test set: another batch size
        fresh = build_model()
        nnx.onnx.load_weights(fresh, path)

    with nnx.no_grad():
        nnx_logits = nnx.to_numpy(model(nnx.asarray(x_test)))
        reloaded = nnx.to_numpy(fresh.eval()(nnx.asarray(x_test)))
    nnx_pred, onnx_pred = nnx_logits.argmax(1), onnx_logits.argmax(1)
    result = {
        "test_accuracy_nnx": float((nnx_pred == y_test).mean()),
        "test_accuracy_onnxruntime": float((onnx_pred == y_test).mean()),
        "agreement": float((nnx_pred == onnx_pred).mean()),
        "agree": int((nnx_pred == onnx_pred).sum()),
        "n": len(y_test),
        "max_abs_logit_diff": float(np.abs(nnx_logits - onnx_logits).max()),
        "reloaded_identical": bool(np.array_equal(reloaded, nnx_logits)),
    }
    backend = nnx.get_backend()
    print(f"trained {args.epochs} epochs in {elapsed:.1f} s on {backend.name} ({backend.device_name}); "
          f"exported {size / 1024:.0f} KiB (opset {args.opset})")
    print(f"test accuracy: nnx {result['test_accuracy_nnx']:.4f}, "
          f"onnxruntime {result['test_accuracy_onnxruntime']:.4f}")
    print(f"agreement: {result['agree']}/{result['n']} predictions ({100 * result['agreement']:.2f}%), "
          f"max |logit difference| {result['max_abs_logit_diff']:.2e}; "
          f"load_weights round trip identical: {result['reloaded_identical']}")
    return result


if __name__ == "__main__":
    main()
