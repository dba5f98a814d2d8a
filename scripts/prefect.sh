#!/usr/bin/env bash
# Helpers to start/stop the local Prefect server and the serve process. Source after env.sh.
# Children are stopped by PID: SIGTERM, then SIGKILL after a grace period.

kvw_wait_http() {  # url seconds
  local url=$1 deadline=$((SECONDS + $2))
  until curl -fsS "$url" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.5
  done
}

kvw_stop() {  # pid...
  local pid
  for pid in "$@"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 20); do
    local alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.5
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}

kvw_start_server() {  # sets KVW_SERVER_PID (empty when a server already answers)
  KVW_SERVER_PID=""
  if curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; then
    echo "using the Prefect server already at $PREFECT_API_URL"
    return 0
  fi
  mkdir -p "$PREFECT_HOME"
  prefect server start --host 127.0.0.1 --port "$KVW_PREFECT_PORT" >"$PREFECT_HOME/server.log" 2>&1 &
  KVW_SERVER_PID=$!
  disown "$KVW_SERVER_PID" 2>/dev/null || true   # stopped by PID below; no job-control chatter
  if ! kvw_wait_http "$PREFECT_API_URL/health" 90; then
    echo "Prefect server did not start; see $PREFECT_HOME/server.log" >&2
    tail -20 "$PREFECT_HOME/server.log" >&2
    return 1
  fi
  echo "Prefect server on $PREFECT_API_URL (pid $KVW_SERVER_PID, UI http://127.0.0.1:$KVW_PREFECT_PORT)"
}

kvw_start_serve() {  # sets KVW_SERVE_PID; waits until the deployments are registered
  python -m flows.serve >"$PREFECT_HOME/serve.log" 2>&1 &
  KVW_SERVE_PID=$!
  disown "$KVW_SERVE_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 120))
  until prefect deployment inspect extract/longbench >/dev/null 2>&1; do
    if ! kill -0 "$KVW_SERVE_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "serving the deployments failed; see $PREFECT_HOME/serve.log" >&2
      tail -20 "$PREFECT_HOME/serve.log" >&2
      return 1
    fi
    sleep 1
  done
  echo "deployments served (pid $KVW_SERVE_PID, log $PREFECT_HOME/serve.log)"
}
