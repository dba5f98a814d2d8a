#!/usr/bin/env bash
# The test suite: installs what it needs (venv, headless Chromium for report tests), then pytest.
# Arguments go to pytest, e.g. scripts/test.sh -k prompts -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will fail" >&2
fi
. scripts/env.sh
unset PREFECT_API_URL   # tests start their own server on a free port
exec python -m pytest "$@"
