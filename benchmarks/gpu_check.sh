#!/usr/bin/env bash
# The GPU check: one script for one H100/H200 (issues 8 and 15). It prints
#   1. for each shape (--shape, repeatable; default llama3.1-8b qwen2.5-7b gemma2-9b: random weights of the real
#      shapes, benchmarks/random_model.py), bf16, the model's default attention (sdpa; eager for Gemma2):
#      extraction / bare prefill at 4K and 16K tokens, one sample alone and 8 samples on 4 threads (prefill
#      serialised, tokenizing and writing overlapped), with peak GPU memory (benchmarks/extract_overhead.py);
#   2. for the first shape, the one-prefill sweep's speed-up at 8 policies (benchmarks/policy_sweep.py);
#   3. for the first shape, a sample's whole default evaluation sweep (70 instances, both KLs) against one
#      full-cache answer: masked, compacted and re-prefill, with peak memory (benchmarks/sweep_cost.py).
#      --no-sweep leaves 2 and 3 out.
# The GPU machine cannot download anything and its transformers (5.17) is older than this project's floor, so
# the wheels it lacks, a tokenizer and a few LongBench tasks travel in .gpu_bundle/ (git-ignored, ~45 MB).
# flash-attn has no wheel for that machine: sdpa is what is measured.
#
#   benchmarks/gpu_check.sh --prepare    here, with PyPI reachable: fill .gpu_bundle/
#   benchmarks/gpu_check.sh [--shape S ...] [--lengths "4096 16384"] [--no-sweep]
#                                        there, from the repo root, with .gpu_bundle carried along
#   benchmarks/gpu_check.sh --smoke      here: the same steps on tiny random models on the CPU (~1-2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
B=.gpu_bundle
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
  PY=${PYTHON:-.venv/bin/python}
  rm -rf "$B" && mkdir -p "$B/whl" "$B/tokenizer" "$B/longbench/config" "$B/longbench/data"
  # exactly the versions tested here; --no-deps: the machine has their other needs (hub 1.33, tokenizers 0.23)
  for pkg in transformers duckdb regex; do
    ver=$("$PY" -c "from importlib.metadata import version; print(version('$pkg'))")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$B/whl" "$pkg==$ver"
  done
  tok=$("$PY" -c "from extract import model as m; print(m.converted_gguf()[0])")  # the default model's tokenizer
  cp "$tok"/tokenizer.json "$tok"/tokenizer_config.json "$tok"/config.json "$B/tokenizer/"
  cp "$tok"/chat_template.jinja "$B/tokenizer/" 2>/dev/null || true
  lb=$("$PY" -c "from extract.longbench import default_data_dir; print(default_data_dir())")
  cp "$lb"/config/*.json "$B/longbench/config/"
  for t in narrativeqa qasper gov_report hotpotqa multi_news; do cp "$lb/data/$t.jsonl" "$B/longbench/data/"; done
  du -sh "$B"
  exit 0
fi

SHAPES="" DEV=cuda DTYPE=bfloat16 LENGTHS="" REPEATS=3 WAYS="masked compacted" TOK="$B/tokenizer" SWEEP=1 SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --shape) SHAPES="$SHAPES $2"; shift ;;
    --lengths) LENGTHS="$2"; shift ;;
    --no-sweep) SWEEP=0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see the header)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 1 ]; then
  PY=${PYTHON:-.venv/bin/python} SHAPES=${SHAPES:-"tiny tiny-qwen2 tiny-gemma2"} DEV=cpu DTYPE=float32
  LENGTHS=${LENGTHS:-"256 512"} REPEATS=1 TOK="" WAYS=masked  # the default model's tokenizer; tests time masked
else
  LENGTHS=${LENGTHS:-"4096 16384"}
  SHAPES=${SHAPES:-"llama3.1-8b qwen2.5-7b gemma2-9b"}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$B"/whl/*.whl
  export PYTHONPATH=/tmp/site KVW_LONGBENCH="$PWD/$B/longbench" KVW_CACHE=${KVW_CACHE:-/tmp/kvw-cache}
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
"$PY" - <<'EOF'
import platform, torch, transformers, duckdb, pyarrow
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"python {platform.python_version()} torch {torch.__version__} transformers {transformers.__version__} "
      f"duckdb {duckdb.__version__} pyarrow {pyarrow.__version__}; {gpu}")
EOF

for SHAPE in $SHAPES; do
  echo "== 1. extraction vs bare prefill ($SHAPE, $DTYPE, the model's default attention) =="
  # shellcheck disable=SC2086
  "$PY" benchmarks/extract_overhead.py --random-config "$SHAPE" --tokenizer "$TOK" --device "$DEV" --dtype "$DTYPE" \
    --lengths $LENGTHS --repeats "$REPEATS" --pipeline 8 --workers 4 --json "$OUT/extract_overhead-$SHAPE.json"
done

[ "$SWEEP" = 1 ] || exit 0
FIRST=$(echo "$SHAPES" | awk '{print $1}')
for n in $LENGTHS; do
  task=hotpotqa
  [ "$n" -gt 8192 ] && task=narrativeqa  # hotpotqa samples here stop near 14K tokens
  echo "== 2. one prefill for 8 policies vs 8 prefills, $n tokens ($task, $FIRST) =="
  # bf16: batched and batch-1 matmuls round differently, so tokens may flip after a near-tie; speed is the point
  "$PY" benchmarks/policy_sweep.py --random-config "$FIRST" --tokenizer "$TOK" --device "$DEV" --dtype "$DTYPE" \
    --task "$task" --max-tokens "$n" --max-new-tokens 32 --tolerance 1e9
done

for n in $LENGTHS; do
  task=hotpotqa
  [ "$n" -gt 8192 ] && task=narrativeqa
  echo "== 3. a sample's whole default sweep vs one full-cache answer, $n tokens ($task, $FIRST) =="
  # shellcheck disable=SC2086
  "$PY" benchmarks/sweep_cost.py --random-config "$FIRST" --tokenizer "$TOK" --device "$DEV" --dtype "$DTYPE" \
    --task "$task" --lengths "$n" --repeats "$REPEATS" --reprefill 2 --ways $WAYS
done
