#!/usr/bin/env bash
# One-call GPU check of nnx (issue 8, item 8). Run from the project root:
#
#     bash benchmarks/gpu_check.sh            # at most ~8 minutes
#
# Needs CuPy, PyTorch (CUDA), NumPy, pytest and scikit-learn. array-api-compat and
# array-api-strict are installed from a folder of wheels when missing (no network needed);
# fetch them beforehand on a machine with network access:
#
#     pip download --only-binary=:all: --no-deps -d benchmarks/wheels array-api-compat array-api-strict
#
# (or set NNX_WHEELS=/path/to/wheels). nnx itself must be importable (pip install --no-deps -e .);
# PYTHON=/path/to/python picks the interpreter. On a machine without a usable GPU it prints a clear
# "no GPU" report and exits 0 after a CPU smoke run of the benchmark. Time limits per part:
# tests 240 s, examples 20 s each (120 s in all), benchmark 150 s. Exit status: 0 when every
# part passed, 1 otherwise. NNX_SMOKE_ARGS (e.g. "--workload mlp") and NNX_SMOKE_OUT adjust the CPU smoke run.
set -u
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python}
WHEELS=${NNX_WHEELS:-}
[ -z "$WHEELS" ] && for d in benchmarks/wheels shared/wheels; do [ -d "$d" ] && WHEELS=$d && break; done
STATUS=0
section() { printf '\n==== %s ====\n' "$1"; }
fail() { echo "FAILED: $1"; STATUS=1; }

section "packages"
for pkg in array_api_compat array_api_strict; do
  if ! $PY -c "import $pkg" 2>/dev/null; then
    if [ -n "$WHEELS" ]; then
      $PY -m pip install --no-index --find-links "$WHEELS" "${pkg//_/-}" -q || fail "installing $pkg from $WHEELS"
    else
      fail "$pkg is missing and no wheel folder was found (see the header of this script for pip download)"
    fi
  fi
done
if ! $PY -c "import nnx, nnx_backends" 2>/dev/null; then
  echo "nnx is not importable by $PY: install it first (pip install --no-deps -e .), or set PYTHON=/path/to/python"
  exit 2
fi

section "GPU and versions"
$PY - <<'PYEOF'
import importlib, platform
print("python", platform.python_version())
for m in ("numpy", "cupy", "torch", "array_api_compat", "array_api_strict", "sklearn", "pytest"):
    try:
        print(f"{m:<18}", importlib.import_module(m).__version__)
    except Exception as exc:
        print(f"{m:<18} MISSING ({type(exc).__name__}: {exc})")
try:
    import torch
    print("torch.cuda        ", torch.cuda.is_available(), torch.version.cuda,
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as exc:
    print("torch.cuda         error:", exc)
import nnx
print("nnx backends      ", nnx.available_backends())
PYEOF
if ! $PY -c "import nnx, sys; sys.exit(0 if nnx.available_backends().get('cupy') is True else 1)" 2>/dev/null; then
  REASON=$($PY -c "import nnx; print(nnx.available_backends().get('cupy'))" 2>&1)
  section "no GPU"
  echo "no GPU: the cupy backend cannot run here: $REASON"
  echo "Skipping the CuPy tests, the examples on --backend cupy and the GPU benchmark."
  section "CPU smoke run of the benchmark (numpy vs PyTorch CPU, tiny sizes)"
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 timeout 120 $PY benchmarks/bench_gpu.py --backend numpy --device cpu --tiny --warmup 1 --repeats 2 \
    --out "${NNX_SMOKE_OUT:-benchmarks/results/gpu_check_cpu_smoke.json}" ${NNX_SMOKE_ARGS:-} || fail "bench_gpu.py CPU smoke run"
  section "summary"
  echo "no GPU; CPU smoke run $( [ $STATUS = 0 ] && echo passed || echo FAILED )"
  exit $STATUS
fi

section "CuPy-marked tests (-m cupy, 240 s)"
timeout 240 $PY -m pytest -q -m cupy -x --no-header -p no:cacheprovider tests || fail "pytest -m cupy"

section "examples on --backend cupy (20 s each)"
run_example() {
  local script=$1; shift
  local t0=$SECONDS
  if timeout 20 $PY "examples/$script" --backend cupy "$@" > /tmp/nnx_gpu_check_example.log 2>&1; then
    echo "ok    $script ($((SECONDS - t0)) s)"
  else
    local rc=$?
    if [ $rc = 124 ]; then echo "time  $script: still running after 20 s (stopped; not a failure)"; else
      fail "$script (exit $rc)"; tail -5 /tmp/nnx_gpu_check_example.log; fi
  fi
}
run_example mlp_digits.py --epochs 1 --quiet
run_example cnn_digits.py --epochs 1 --quiet
run_example rnn_sequence_digits.py --epochs 1 --quiet
run_example char_lm.py --epochs 1 --steps-per-epoch 5 --quiet
run_example fit_digits.py --epochs 1 --quick --quiet --out /tmp/nnx_gpu_check_fit
run_example custom_backward.py
run_example residual_block.py

section "benchmark: nnx on CuPy vs PyTorch CUDA eager (150 s)"
timeout 170 $PY benchmarks/bench_gpu.py --backend cupy --budget 150 || fail "bench_gpu.py"
section "launch counts (CuPy mode, NumPy arithmetic)"
timeout 60 $PY benchmarks/launches.py --top 0 || fail "launches.py"

section "summary"
[ $STATUS = 0 ] && echo "GPU check passed" || echo "GPU check FAILED (see above)"
exit $STATUS
