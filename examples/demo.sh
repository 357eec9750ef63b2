#!/usr/bin/env bash
# `npm run demo`: compile the bundled example image into a blob plus a content-addressed store,
# then show what is inside. Installs what it needs on a fresh machine (npm packages; the build).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund >&2
fi
npx tsc -p tsconfig.json
out=demo-out
rm -rf "$out" && mkdir -p "$out"
cfs() { bin/cfs "$@"; }
run() { printf '\n$ cfs %s\n' "$*"; cfs "$@"; }

run build examples/hello-oci.tar -o "$out/hello.ub" --store "$out/store" --json
run info "$out/hello.ub"
run ls -l "$out/hello.ub" /
run ls -l "$out/hello.ub" /app
run cat "$out/hello.ub" /etc/os-release --store "$out/store"
run dump "$out/hello.ub"
run fsck "$out/hello.ub" --store "$out/store"
printf '\n$ find %s/store -type f   # every distinct content once; small files live in the blob\n' "$out"
find "$out/store" -type f | sort
printf '\nSecond build into the same store (every object already present):\n'
run build examples/hello-oci.tar -o "$out/hello-again.ub" --store "$out/store" --json
cmp "$out/hello.ub" "$out/hello-again.ub" && echo "blobs are byte-identical"
