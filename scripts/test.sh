#!/usr/bin/env bash
# The test suite: installs what it needs (scripts/setup.sh: venv, headless Chromium, old DuckDB releases), then pytest.
# Arguments go to pytest, e.g. scripts/test.sh -k prompts -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh   # the venv, headless Chromium (scripts/chromium.sh), the older DuckDB releases
. scripts/env.sh
unset PREFECT_API_URL   # tests start their own server on a free port
exec python -m pytest "$@"
