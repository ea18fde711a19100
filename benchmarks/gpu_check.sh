#!/usr/bin/env bash
# The GPU path in one command (see benchmarks/gpu_check.py for its stages and output):
#   bash benchmarks/gpu_check.sh [--dry-run] [--device cuda:N] [--out DIR]
# Set-up first, from the repository alone: the Makefile's .venv with the pinned packages and
# Debian's Fashion-MNIST. On a machine whose python3 already holds a CUDA torch and no internet
# (a lent GPU image), PYTHON=python3 skips the venv: the notebook runner is installed from the
# wheels in $WHEELS and Fashion-MNIST read from --data-root, both made by benchmarks/gpu_carry.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
  if [[ -n "${WHEELS:-}" ]]; then
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" -r benchmarks/gpu_requirements.txt >&2
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  exec "$PYTHON" benchmarks/gpu_check.py "$@"
fi
make --no-print-directory setup data >&2
exec .venv/bin/python benchmarks/gpu_check.py "$@"
