#!/usr/bin/env bash
# Headless Chromium, which reports/browser.py (`kvw report`'s page checks) and the browser tests drive:
# installed with apt-get where this runs as root, otherwise the command to run is printed. Never fails:
# everything but those pages works without it. Called by scripts/setup.sh.
set -uo pipefail
for c in "${KVW_CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable chrome; do
  if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then
    exit 0
  fi
done
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium (apt-get) for the report pages and browser tests ..."
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); then
    exit 0
  fi
  echo "warning: apt-get could not install chromium; the browser tests will fail" >&2
fi
echo "note: no Chromium found (report page checks and the browser tests need one): install it, e.g." \
  "\`sudo apt-get install chromium\` (Debian/Ubuntu) or \`brew install --cask chromium\` (macOS)," \
  "or point KVW_CHROMIUM at a Chrome/Chromium executable" >&2
exit 0
