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
# uv installs the same pins several times faster than pip (~20 s against ~2.5 min here); it gets pip's own
# configuration (indexes, find-links, constraints: files and PIP_* variables) as options, and anything it cannot do
# falls back to pip. Bytecode is compiled at install, as pip does (processes here must not compile torch on every
# import: PYTHONDONTWRITEBYTECODE may be set). SPARKCOURSE_NO_UV=1, or a TORCH_INDEX_URL, uses pip only.
uv_options() {
  .venv/bin/python -m pip config list 2>/dev/null | while IFS= read -r line; do
    key=${line%%=*}; key=${key##*.}; value=${line#*=}; value=${value#\'}; value=${value%\'}
    case $key in
      index-url|extra-index-url|find-links|constraint) for v in $value; do printf -- '--%s\n%s\n' "$key" "$v"; done ;;
    esac
  done
}
install_with_uv() {
  [ "${SPARKCOURSE_NO_UV:-}" != 1 ] && [ -z "${TORCH_INDEX_URL:-}" ] || return 1
  .venv/bin/python -m pip install -q uv >/dev/null 2>&1 || return 1
  local opts=()
  mapfile -t opts < <(uv_options)
  local uv=(.venv/bin/python -m uv pip install -q --python .venv/bin/python --compile-bytecode --index-strategy unsafe-best-match
            "${opts[@]}")
  "${uv[@]}" "torch==2.13.0" && "${uv[@]}" -e ".[dev]"
}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if ! install_with_uv; then
    echo "installing with pip"
    .venv/bin/python -m pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    .venv/bin/python -m pip install -q -e ".[dev]"
  fi
  echo "$want" > "$stamp"
fi
.venv/bin/python -m pip check >/dev/null
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
echo "sparkcourse environment ready (.venv)"
