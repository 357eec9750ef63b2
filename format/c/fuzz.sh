#!/usr/bin/env bash
# `npm run fuzz -- SECONDS`: run every libFuzzer target of the C reader (fuzz_reader: every entry
# point the kernel module and the FUSE server use, on what the blob says; fuzz_ops: inode
# numbers, positions, names and offsets chosen by callers) for SECONDS each (default 60) under
# ASan+UBSan, seeded with the golden vectors and blobs of real images (fuzz-seeds.sh), after
# replaying the checked-in regression inputs (regress/). Exits non-zero on a crash; the crashing
# input is left in format/c/build/ (crash-*, timeout-*, oom-*).
# UB_FUZZ_ARGS adds libFuzzer flags (e.g. "-runs=10000000" for a run of a fixed length).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
command -v clang >/dev/null || { echo "fuzz: clang is required (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
make -s fuzz
seeds=build/fuzz-seeds
# The golden vectors follow the format: when they changed, so did every seed (rebuild them).
if ! cmp -s ../vectors/small.ub "$seeds/small.ub"; then
  rm -rf "$seeds"
  ./fuzz-seeds.sh "$seeds" >/dev/null
fi
for target in fuzz_reader fuzz_ops; do
  # regression inputs: each must run clean (no corpus dir, so libFuzzer just replays files)
  build/$target -runs=1 regress/*
  corpus=build/corpus-$target
  mkdir -p "$corpus"
  echo "fuzz: $target for ${seconds}s" >&2
  # shellcheck disable=SC2086
  build/$target -max_total_time="$seconds" -max_len=1048576 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=build/ -print_final_stats=1 ${UB_FUZZ_ARGS:-} "$corpus" "$seeds"
done
