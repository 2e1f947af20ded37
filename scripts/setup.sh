#!/usr/bin/env bash
# Set up the course environment in .venv (Python 3.11 + pip). Idempotent: a second run only checks.
# torch goes in first, pinned, so nothing later replaces it. Which build arrives depends on the package index:
# this project's CI index serves the CPU build; plain PyPI on Linux x86-64 serves the CUDA build. Set
# TORCH_INDEX_URL to PyTorch's CPU wheel index to get the CPU build there (README, "Quick start").
# On a DGX Spark use environment.yml instead (README, "Running on a DGX Spark").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.sparkcourse-installed
want=$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
.venv/bin/python -m pip check >/dev/null
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
echo "sparkcourse environment ready (.venv)"
