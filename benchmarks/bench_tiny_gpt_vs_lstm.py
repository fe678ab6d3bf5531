"""tiny_gpt (decoder-only character Transformer) vs the LSTM of char_lm.py at an equal wall-clock budget.

Both examples train on the same text (``argparse.py``) and are scored the same way: validation
perplexity (exp of the mean cross-entropy per character) on the same last 10 % of the text, in
windows of 64 characters. Each runs in its own process at one thread (BLAS and nnx pools), one
after the other (never at the same time), with the same ``--time-budget``: training stops when the
budget is spent, then the validation perplexity is measured. The LSTM evaluates after every epoch
inside its budget (as the example does, ~1 % of it); tiny_gpt evaluates once, at the end.

Usage: ``python benchmarks/bench_tiny_gpt_vs_lstm.py [--budget 120] [--repeats 1] [--order lstm,gpt]``;
extra example options after ``--gpt-args`` / ``--lstm-args`` (quoted). Prints one JSON line per run
(model, budget, steps, validation perplexity, load average before and after) and a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUNNER = """
import json, sys
sys.path.insert(0, {examples!r})
import {module} as ex
r = ex.main({argv!r})
h = r["history"][-1]
steps = r.get("steps", sum(e.get("steps", 0) for e in r["history"]))
print("RESULT " + json.dumps({{"val_ppl": h["val_ppl"], "train_ppl": h["train_ppl"], "steps": steps}}))
"""


def _load() -> float:
    return os.getloadavg()[0]


def run_one(model: str, budget: float, extra: list[str], threads: int) -> dict:
    """Train one example in a fresh process for ``budget`` seconds; its final validation perplexity."""
    module = "tiny_gpt" if model == "gpt" else "char_lm"
    argv = ["--quiet", "--time-budget", str(budget), "--threads", str(threads)]
    if model == "gpt":
        argv += ["--eval-every", "1000000000", "--sample-length", "0"]
    else:
        argv += ["--sample-length", "0"]
    code = _RUNNER.format(examples=os.path.join(ROOT, "examples"), module=module, argv=argv + extra)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               NNX_NUM_THREADS=str(threads), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load0, t0 = _load(), time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"bench_tiny_gpt_vs_lstm: the {model} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    res.update(model="tiny_gpt" if model == "gpt" else "lstm", budget_s=budget, process_wall_s=round(wall, 1),
               threads=threads, load_before=round(load0, 2), load_after=round(_load(), 2), args=extra)
    return res


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--order", default="lstm,gpt", help="which runs first (alternated between repeats)")
    parser.add_argument("--gpt-args", default="", help="extra tiny_gpt.py options, one quoted string")
    parser.add_argument("--lstm-args", default="", help="extra char_lm.py options, one quoted string")
    args = parser.parse_args(argv)
    order = [m.strip() for m in args.order.split(",")]
    if sorted(order) != ["gpt", "lstm"]:
        raise SystemExit(f"bench_tiny_gpt_vs_lstm: --order must name lstm and gpt once each; got {args.order!r}")
    extra = {"gpt": shlex.split(args.gpt_args), "lstm": shlex.split(args.lstm_args)}
    results = []
    for r in range(args.repeats):
        for model in (order if r % 2 == 0 else order[::-1]):
            res = run_one(model, args.budget, extra[model], args.threads)
            results.append(res)
            print(json.dumps(res), flush=True)
    best = {m: min(x["val_ppl"] for x in results if x["model"] == m) for m in ("lstm", "tiny_gpt")}
    med = {}
    for m in ("lstm", "tiny_gpt"):
        v = sorted(x["val_ppl"] for x in results if x["model"] == m)
        med[m] = v[len(v) // 2]
    print(json.dumps({"summary": True, "budget_s": args.budget, "repeats": args.repeats, "median_val_ppl": med,
                      "best_val_ppl": best, "tiny_gpt_wins": med["tiny_gpt"] < med["lstm"]}), flush=True)
    return results


if __name__ == "__main__":
    main()
