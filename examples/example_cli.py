"""What every example script shares: ``--backend``, ``--device`` and ``--threads``, a clear one-line
exit (code 2) when the backend cannot be used, and whole-sentence ``--help`` descriptions.

Choosing ``--threads``: the examples' matrix products are small, so one thread per process is
usually fastest, and on a busy or shared machine more threads can make a run many times slower
(cnn_digits.py: 11 s with one thread, 71-273 s with the default on a loaded 2-core machine). Try
``--threads 0`` (the libraries' defaults) on an idle machine with many cores.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import nnx


def description(doc: str | None) -> str:
    """The first paragraph of a module docstring, on one line (argparse's ``description``)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def add_runtime_args(parser: argparse.ArgumentParser, threads: int = 1) -> None:
    """Add ``--backend``, ``--device`` and ``--threads`` to ``parser``."""
    parser.add_argument("--backend", default="numpy",
                        help="Array backend to run on: numpy, cupy, torch or array_api_strict (default numpy).")
    parser.add_argument("--device", default=None,
                        help="Device of the backend, e.g. 0 or cuda:0 for cupy and torch (default: the first).")
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"CPU threads for BLAS, OpenMP and PyTorch (default {threads}; 0 keeps the libraries' "
                             "defaults). Small models run fastest with 1, and a busy machine slows down with more.")


def setup_runtime(args: argparse.Namespace) -> Any:
    """Limit the thread pools to ``args.threads`` and make ``args.backend`` current.

    A backend that is not installed or cannot run here ends the script with one line on stderr and
    exit code 2. Returns the threadpoolctl limiter (or None); its limits last for the process.
    """
    try:
        nnx.set_backend(args.backend, device=args.device)
    except (nnx.BackendUnavailable, ValueError, KeyError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{sys.argv[0] or 'example'}: cannot use backend {args.backend!r}"
              f"{'' if args.device is None else f' on device {args.device!r}'}: {reason}", file=sys.stderr)
        raise SystemExit(2) from None
    limiter = None
    if args.threads > 0:
        if args.backend == "torch":  # PyTorch keeps its own intra-op pool
            import torch

            torch.set_num_threads(args.threads)
        try:
            import threadpoolctl
        except ImportError:
            pass
        else:
            limiter = threadpoolctl.threadpool_limits(args.threads)
    return limiter
