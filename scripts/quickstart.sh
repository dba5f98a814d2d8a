#!/usr/bin/env bash
# The main job, end to end on the default model: install, start Prefect, serve the deployments,
# run `prefect deployment run extract/longbench` on a small LongBench slice, wait, show the data.
# Extra arguments are passed to the deployment run, e.g.: scripts/quickstart.sh -p limit=3 -p max_tokens=4096
set -euo pipefail
set -m
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
. scripts/prefect.sh

KVW_SERVER_PID="" KVW_SERVE_PID=""
cleanup() { kvw_stop $KVW_SERVE_PID $KVW_SERVER_PID; }
trap cleanup EXIT INT TERM

kvw_start_server
kvw_start_serve

echo "running extract/longbench (first run converts the model once, ~20 s) ..."
prefect deployment run extract/longbench --watch --watch-timeout "${KVW_WATCH_TIMEOUT:-3600}" \
  -p raw_kv=true -p raw_kv_positions=128 "$@"

echo
echo "Parquet:        $(python -c 'from warehouse import config; print(config.data_root())')"
echo "DuckDB catalog: $(python -c 'from warehouse import config; print(config.db_path())')"
echo
q="SELECT layer, round(avg(key_norm), 2) AS key_norm, round(avg(value_norm), 2) AS value_norm FROM token_stats GROUP BY layer ORDER BY layer LIMIT 8"
echo "Try:  .venv/bin/kvw sql \"$q\""
kvw sql "$q"
echo "or:   duckdb warehouse/kv.duckdb   (any DuckDB >= 1.2 CLI)"
