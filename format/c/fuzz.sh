#!/usr/bin/env bash
# `npm run fuzz -- SECONDS`: run the libFuzzer target of the C reader (every entry point the
# kernel module and the FUSE server use) for SECONDS (default 60) under ASan+UBSan, seeded with
# the golden vectors. Exits non-zero on a crash; the crashing input is left in format/c/build/.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
command -v clang >/dev/null || { echo "fuzz: clang is required (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
make -s build/fuzz_reader
corpus=build/fuzz-corpus
mkdir -p "$corpus"
# The golden vectors are the current format: refresh them over older copies.
cp ../vectors/*.ub "$corpus/"
exec build/fuzz_reader -max_total_time="$seconds" -max_len=1048576 -timeout=10 \
  -artifact_prefix=build/ -print_final_stats=1 "$corpus"
