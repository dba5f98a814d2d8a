#!/usr/bin/env bash
# The main job, end to end on the default model: install, start Prefect, serve the deployments,
# run `prefect deployment run extract/longbench` on a small LongBench slice, then a small
# evaluate/longbench policy sweep and report/longbench, wait, show where everything is.
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

# A small policy sweep on the short-answer tasks this extraction holds (its latest run).
eval_tasks=$(python - <<'PY'
from warehouse import catalog
con = catalog.connect()
print(con.execute("""SELECT coalesce(string_agg(DISTINCT task, ',' ORDER BY task), '') FROM samples
    WHERE run_id = (SELECT run_id FROM runs ORDER BY finished_at DESC LIMIT 1)
      AND task IN ('qasper', 'hotpotqa', '2wikimqa', 'triviaqa')""").fetchone()[0])
PY
)
if [ -n "$eval_tasks" ]; then
  echo "running evaluate/longbench on $eval_tasks (1 sample each): 7 policies x budgets 25%/50%, question-aware, one prefill per sample (the flow's default sweep is 5 budgets x both settings) ..."
  prefect deployment run evaluate/longbench --watch --watch-timeout "${KVW_WATCH_TIMEOUT:-3600}" \
    -p tasks="$eval_tasks" -p limit=1 -p 'budgets=[0.25,0.5]' -p setting=question_aware \
    >"$PREFECT_HOME/evaluate-watch.log" 2>&1 \
    || { tail -30 "$PREFECT_HOME/evaluate-watch.log"; exit 1; }
else
  echo "no short-answer task in this slice: skipping the evaluate/longbench sweep"
fi

echo "running report/longbench ..."
prefect deployment run report/longbench --watch --watch-timeout "${KVW_WATCH_TIMEOUT:-3600}" \
  >"$PREFECT_HOME/report-watch.log" 2>&1 || { tail -30 "$PREFECT_HOME/report-watch.log"; exit 1; }

echo
echo "Parquet:        $(python -c 'from warehouse import config; print(config.data_root())')"
echo "DuckDB catalog: $(python -c 'from warehouse import config; print(config.db_path())')"
echo "Reports:        $(python -c 'from warehouse import config; print(config.reports_dir() / "index.html")')"
echo
q="SELECT layer, round(avg(key_norm), 2) AS key_norm, round(avg(value_norm), 2) AS value_norm FROM token_stats GROUP BY layer ORDER BY layer LIMIT 8"
echo "Try:  .venv/bin/kvw sql \"$q\""
kvw sql "$q"
echo "      .venv/bin/kvw compare sink_recent snapkv h2o      # policies side by side over the quality table"
echo "      duckdb warehouse/kv.duckdb                         # a DuckDB CLI 1.3 or newer"
