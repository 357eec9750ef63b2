#!/bin/bash
# Kernel benchmark (issues #3, #6): unionblob.ko against ext4, erofs and overlayfs in Debian's
# 6.12 under qemu (TCG), on image `a` of test/fixtures/make-images.sh and on a synthetic image
# of 100,000 files plus one 200 MiB file, and on images a + b (sharing a base) for page-cache
# sharing. Not a test: run it by hand or through bench/run.mjs (as root, ~15-20 min).
#
#   bench/kernel/run.sh [--reps N] [--images a,s] [--skip TEST,...] [--write] [--json FILE]
#
#   --reps N      repetitions of every measurement (default 5)
#   --images      which images (default a,s; s = the synthetic one)
#   --skip        leave tests out: mount, mem, walk-cold, walk-warm, read-warm, open-warm,
#                 read-cold, seq-cold, seq-warm, rand-cold, rand-warm, par, share
#   --write       put the tables into bench/kernel/RESULTS.md (between its bench markers)
#   --json FILE   also write the figures as JSON (report.mjs --json)
#
# Prints the tables (median, spread, ratio to ext4 of the same run) and keeps the raw guest
# lines and the tables in ${UB_CACHE}/bench/results/. Env: UB_CACHE, UB_BENCH_MEM (guest MiB,
# default 4096), UB_BENCH_TIMEOUT (s, default 1800), UB_BENCH_FILES / UB_BENCH_BIG (synthetic
# image size, default 100000 files / 209715200 bytes), UB_BENCH_PAR (reader threads, default
# 1,2,4), UB_BENCH_RAND (random reads per cold run, default 2000), UB_BENCH_INIT (another guest /init,
# for experiments).
#
# Reuses the module tests' pieces: test/kernel/fetch-kernels.sh (the kernel),
# test/kernel/lib.sh (module build, initramfs, qemu); bench/kernel/prepare.sh makes the data.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${UB_CACHE:-/var/cache/unionblob-test}
WORK=$CACHE/bench/work
RESULTS=$CACHE/bench/results
log() { echo "kernel-bench: $*" >&2; }

REPS=5 IMAGES=a,s SKIP= WRITE= JSON=
while [ $# -gt 0 ]; do
	case $1 in
	--reps) REPS=$2; shift 2 ;;
	--images) IMAGES=$2; shift 2 ;;
	--skip) SKIP=$2; shift 2 ;;
	--write) WRITE=1; shift ;;
	--json) JSON=$2; shift 2 ;;
	*) sed -n '2,23p' "$0" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { log "run as root (mkfs -d of owners/devices, trusted.* xattrs)"; exit 1; }
mkdir -p "$WORK" "$RESULTS"
# One bench at a time (the machine is shared; two guests would measure each other).
exec 8>"$CACHE/bench/.lock"
flock -n 8 || { log "another bench/kernel run holds $CACHE/bench/.lock"; exit 1; }

started=$(date +%s)
"$REPO/test/kernel/fetch-kernels.sh" 6.12 >/dev/null
rel=$(cat "$CACHE/kernels/6.12.release")
. "$REPO/test/kernel/lib.sh"

log "6.12 ($rel): building the module and the initramfs"
gcc -static -O2 -Wall -pthread -o "$WORK/ubbench" "$HERE/ubbench.c"
ko=$(kt_build_module "$rel")
kt_make_initramfs "$rel" "$ko" "$WORK/initrd.gz" "${UB_BENCH_INIT:-$HERE/guest-bench.sh}" \
	"crc32c_generic ext4 nvme overlay erofs" "$WORK/ubbench:bin/ubbench" "$HERE/guest-lib.sh:lib/guest-lib.sh"

log "preparing the data (cached trees; blobs and the ext4 disk are rebuilt)"
read -r DISK EROFS_A EROFS_S EROFS_B < <("$HERE/prepare.sh" | tail -n 1) || true
[ -f "${DISK:-}" ] && [ -f "${EROFS_B:-}" ] || { log "bench/kernel/prepare.sh failed"; exit 1; }

log "booting (reps=$REPS images=$IMAGES${SKIP:+ skip=$SKIP})"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
console=$WORK/console.log
set +e
kt_qemu "$rel" "$WORK/initrd.gz" "$console" "${UB_BENCH_TIMEOUT:-1800}" \
	"console=ttyS0 loglevel=1 panic=-1 ubreps=$REPS ubimages=$IMAGES ubskip=$SKIP ubpar=${UB_BENCH_PAR:-1,2,4} ubrand=${UB_BENCH_RAND:-2000}" \
	"${UB_BENCH_MEM:-4096}" \
	-drive "file=$DISK,if=none,id=d0,format=raw" -device nvme,serial=ubdata,drive=d0 \
	-drive "file=$EROFS_A,if=none,id=d1,format=raw" -device nvme,serial=uberofsa,drive=d1 \
	-drive "file=$EROFS_S,if=none,id=d2,format=raw" -device nvme,serial=uberofss,drive=d2 \
	-drive "file=$EROFS_B,if=none,id=d3,format=raw" -device nvme,serial=uberofsb,drive=d3
rc=$?
set -e
log "guest finished in $(($(date +%s) - started)) s since start (qemu rc $rc)"
# (-o: the first line may follow the firmware's terminal escapes)
tr -d '\r' <"$console" | grep -ao 'UBB .*' >"$RESULTS/$stamp.log" || true
if ! grep -q '^UBB end' "$RESULTS/$stamp.log"; then
	log "the guest did not finish; tail of $console:"
	tail -n 30 "$console" >&2
	exit 1
fi
grep '^UBB \(error\|dmesg\)' "$RESULTS/$stamp.log" >&2 || true

host="$(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores, Linux $(uname -r), $(qemu-system-x86_64 --version | head -n1)"
node "$HERE/report.mjs" "$RESULTS/$stamp.log" --host "$host" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
	--elapsed "$(($(date +%s) - started))" ${WRITE:+--write "$HERE/RESULTS.md"} ${JSON:+--json "$JSON"} | tee "$RESULTS/$stamp.md"
log "raw lines: $RESULTS/$stamp.log"
