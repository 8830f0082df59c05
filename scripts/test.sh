#!/usr/bin/env bash
# Set up .venv (if needed) and run every check CI runs: lint, import contracts, types, tests.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/api -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "[test] ruff"; .venv/bin/ruff check .
echo "[test] import contracts"; .venv/bin/lint-imports
echo "[test] mypy (strict: splitmind, router, api)"; .venv/bin/mypy splitmind router api
echo "[test] pytest"; exec .venv/bin/python -m pytest "$@"
