#!/usr/bin/env bash
# The one test command (README: `npm test`). Installs what the tests need on a fresh Debian
# bookworm machine (Debian packages, npm packages), builds the TypeScript and C parts, runs every
# ava test file (format, compiler, CLI, differential against umoci, FUSE, and the qemu kernel
# harness) and ends with the line `tests: N passed, N failed, N skipped`.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "npm test: the tests mount filesystems and build images as root; run as root" >&2
  exit 1
fi

bash .ci/install-deps.sh || { echo "tests: 0 passed, 1 failed"; exit 1; }

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund >&2 || { echo "tests: 0 passed, 1 failed"; exit 1; }
fi
# npm ci runs the package's install script (the addon and the FUSE server, best effort: a note
# when one does not build) and prepare (tsc). Here a part that does not build fails the run, so
# both builds run again: tsc is quick when nothing changed, the addon is rebuilt only when a
# source is newer than it.
log "tsc"
npx tsc -p tsconfig.json >&2 || { echo "tests: 0 passed, 1 failed"; exit 1; }
addon=mounter/addon/build/Release/unionblob.node
if [ ! -f "$addon" ] || [ -n "$(find mounter/addon/binding.gyp mounter/addon/*.cc mounter/addon/*.h mounter/fuse/verity.[ch] -newer "$addon" 2>/dev/null)" ]; then
  npm run build:addon >&2 || { echo "tests: 0 passed, 1 failed"; exit 1; }
fi

out=$(mktemp)
# TAP output: one line per test, counted below; everything else goes through unchanged.
npx ava --tap "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
passed=$(grep -cE '^ok [0-9]+' "$out" | tr -d ' ')
skipped=$(grep -cE '^ok [0-9]+ .*# (SKIP|skip)' "$out" | tr -d ' ')
failed=$(grep -cE '^not ok [0-9]+' "$out" | tr -d ' ')
passed=$((passed - skipped))
rm -f "$out"
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
  # ava failed outside a test (a crashed worker, an exception while loading a file): count it.
  failed=1
fi
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" = 0 ]
