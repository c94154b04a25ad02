#!/usr/bin/env bash
# One-command set-up and run: `bash scripts/dev.sh train [overrides]`, `bash scripts/dev.sh test [pytest args]`.
# Creates .venv (once), installs torch (see below) and the project in editable mode with its dev tools, the
# sweep plugins and the MLflow and W&B loggers, then runs the command inside the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${GDLAB_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# torch is installed first (GDLAB_TORCH_SPEC), so the project's `torch>=...` requirement takes what is there.
# Without an NVIDIA GPU it comes from PyTorch's CPU-only index (GDLAB_TORCH_INDEX; about 200 MB) when that
# can be reached; otherwise, or with GDLAB_TORCH_INDEX= (empty), from pip's own index, where PyPI's Linux
# x86_64 wheel is the CUDA build (about 0.5 GB plus CUDA libraries; it runs on the CPU too).
TORCH_SPEC="${GDLAB_TORCH_SPEC:-torch==2.13.0}"
TORCH_CPU_INDEX="${GDLAB_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"

reachable() {
  "$PYTHON" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" "$1/torch/" 2>/dev/null
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.gdlab-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/dev.sh ]; then
    return 0
  fi
  echo "[dev.sh] installing into $VENV ..."
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
      echo "[dev.sh] NVIDIA GPU found: installing $TORCH_SPEC with CUDA"
      "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
    elif [ -n "$TORCH_CPU_INDEX" ] && reachable "$TORCH_CPU_INDEX"; then
      echo "[dev.sh] no NVIDIA GPU: installing the CPU build of $TORCH_SPEC from $TORCH_CPU_INDEX"
      "$VENV/bin/python" -m pip install --quiet --index-url "$TORCH_CPU_INDEX" "$TORCH_SPEC"
    else
      why="${TORCH_CPU_INDEX:+$TORCH_CPU_INDEX cannot be reached}"
      echo "[dev.sh] no NVIDIA GPU; ${why:-GDLAB_TORCH_INDEX is empty}: installing $TORCH_SPEC from pip's" \
        "configured index (PyPI's Linux x86_64 wheel is the CUDA build, which also runs on the CPU)"
      "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
    fi
  fi
  # sweep: the Hydra plugins (optuna sweeper, joblib and submitit launchers; ~10 s more); loggers: MLflow's
  # client and Weights & Biases for logger=mlflow and logger=wandb (~180 MB, ~25 s more)
  "$VENV/bin/python" -m pip install --quiet -e ".[dev,sweep,loggers]"
  touch "$stamp"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  train) setup; exec "$VENV/bin/python" train.py "$@" ;;
  # no arguments: the whole suite on every core, with coverage (report, then each module's floor); with
  # arguments: plain pytest, e.g. `bash scripts/dev.sh test -m "not slow"` or `... test tests/test_optim.py`
  test)
    setup
    if [ $# -eq 0 ]; then
      "$VENV/bin/python" -m pytest -n auto --dist worksteal --cov --cov-report=term --cov-report=json:coverage.json
      exec "$VENV/bin/python" scripts/coverage_floor.py coverage.json
    fi
    exec "$VENV/bin/python" -m pytest "$@" ;;
  lint)  setup; exec "$VENV/bin/ruff" check . ;;
  *) echo "usage: bash scripts/dev.sh {setup|train|test|lint} [args]" >&2; exit 2 ;;
esac
