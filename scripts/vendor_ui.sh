#!/usr/bin/env bash
# Copy the chat page's browser libraries from the npm registry into api/ui/static/vendor/
# (marked, DOMPurify: served by the gateway under /ui/vendor/) and keep axe-core in
# web/node_modules for the accessibility test. Versions and integrity hashes are pinned by
# web/package-lock.json; `npm ci` checks them. Skips the work when the lock file has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENDOR=api/ui/static/vendor
STAMP="$VENDOR/.lock-sha256"
want="$(sha256sum web/package-lock.json | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -f web/node_modules/axe-core/axe.min.js ]]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  # The page still works without them (answers as plain text); the tests insist on them.
  echo "[setup] warning: npm not found, so the chat page shows answers as plain text;" \
       "install Node.js and npm (Debian: apt-get install nodejs npm) and run setup again" >&2
  exit 0
fi
echo "[setup] vendoring the chat page's libraries from the npm registry (web/package-lock.json)"
npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
rm -rf "$VENDOR" && mkdir -p "$VENDOR"
sed "/^\/\/# sourceMappingURL=/d" web/node_modules/marked/lib/marked.esm.js > "$VENDOR/marked.esm.js"
cp web/node_modules/marked/LICENSE "$VENDOR/marked.LICENSE"
sed "/^\/\/# sourceMappingURL=/d" web/node_modules/dompurify/dist/purify.es.mjs > "$VENDOR/purify.es.mjs"
cp web/node_modules/dompurify/LICENSE "$VENDOR/dompurify.LICENSE"
echo "$want" > "$STAMP"
