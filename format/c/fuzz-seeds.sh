#!/usr/bin/env bash
# fuzz-seeds.sh DIR: the seed corpus of the fuzz targets, written to DIR: the golden vectors and
# blobs `cfs build` makes of real images (the Debian fixture images base/a/b of
# test/fixtures/make-images.sh, and examples/hello-oci.tar). Not checked in: ~2.3 MB, and they
# follow the format. Needs dist/ (npx tsc) and root (make-images.sh uses debootstrap + umoci).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${1:?usage: fuzz-seeds.sh DIR}
[ -f "$repo/dist/compiler/cli.js" ] || { echo "fuzz-seeds: dist/ is missing: run npx tsc -p tsconfig.json" >&2; exit 1; }
mkdir -p "$dir"
cp "$here"/../vectors/*.ub "$dir/"
images_json=$(bash "$repo/test/fixtures/make-images.sh" | tail -n 1)
layout=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).layout)' "$images_json")
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
build() { node "$repo/bin/cfs" build "$1" -o "$dir/$2.ub" --store "$store" >/dev/null; }
for tag in base a b; do build "$layout:$tag" "image-$tag"; done
build "$repo/examples/hello-oci.tar" hello
ls "$dir" | wc -l
