#!/usr/bin/env bash
# Set up .venv (if needed) and run every check CI runs: lint, import contracts, types, tests.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/api -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need, installed where missing: Node.js and npm (the chat page's
# libraries come from the npm registry) and chromium (Playwright drives it for the chat page's
# tests; Playwright's own browser download is not used, see tests/e2e/browser.py).
apt_install() {
  local sudo=(); [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  echo "[test] installing Debian's $* for the chat page and its browser tests"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null
}
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
command -v chromium >/dev/null 2>&1 || apt_install chromium

./scripts/setup.sh
echo "[test] ruff"; .venv/bin/ruff check .
echo "[test] import contracts"; .venv/bin/lint-imports
echo "[test] mypy (strict: splitmind, router, api)"; .venv/bin/mypy splitmind router api
echo "[test] pytest"; exec .venv/bin/python -m pytest "$@"
