# Source me: the environment every kvwarehouse command expects (Prefect on loopback, state in the repo).
KVW_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KVW_REPO
export PREFECT_HOME="${PREFECT_HOME:-$KVW_REPO/.prefect}"
export KVW_PREFECT_PORT="${KVW_PREFECT_PORT:-4200}"
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:$KVW_PREFECT_PORT/api}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export PREFECT_LOGGING_EXTRA_LOGGERS="extract,transform,reports,warehouse"
export PREFECT_RUNNER_POLL_FREQUENCY="${PREFECT_RUNNER_POLL_FREQUENCY:-2}"
export TOKENIZERS_PARALLELISM=false
export HF_HUB_DISABLE_TELEMETRY=1
if [ -f "$KVW_REPO/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$KVW_REPO/.venv/bin/activate"
fi
# `kvw extract/evaluate` without a server start a temporary one: Prefect's default 20 s is short on a loaded machine
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-120}
