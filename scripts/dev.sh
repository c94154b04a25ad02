#!/usr/bin/env bash
# One-command set-up and run: `bash scripts/dev.sh train [overrides]`, `bash scripts/dev.sh test [pytest args]`.
# Creates .venv (once), installs torch (the CPU wheel where no NVIDIA GPU is present) and the
# project in editable mode with its dev tools and sweep plugins, then runs the command inside the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${GDLAB_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# CPU-only machines get this build of torch first, so the project's `torch>=...` requirement
# does not pull a multi-GB CUDA build. Override with GDLAB_TORCH_SPEC.
TORCH_CPU_SPEC="${GDLAB_TORCH_SPEC:-torch==2.13.0}"

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
      echo "[dev.sh] NVIDIA GPU found: installing torch with CUDA"
    else
      echo "[dev.sh] no GPU: installing the CPU build ($TORCH_CPU_SPEC)"
      "$VENV/bin/python" -m pip install --quiet "$TORCH_CPU_SPEC"
    fi
  fi
  # sweep: the Hydra plugins (optuna sweeper, joblib and submitit launchers; ~10 s more)
  "$VENV/bin/python" -m pip install --quiet -e ".[dev,sweep]"
  touch "$stamp"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  train) setup; exec "$VENV/bin/python" train.py "$@" ;;
  test)  setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  lint)  setup; exec "$VENV/bin/ruff" check . ;;
  *) echo "usage: bash scripts/dev.sh {setup|train|test|lint} [args]" >&2; exit 2 ;;
esac
