#!/bin/bash
# Host benchmark (issue #6): bench/kernel's workloads on the host, for the configs that need no
# module: ext4 (the native limit), erofs, overlayfs, unionblob-fuse (its default options and
# cache=shared) and mergerfs. The same data (bench/kernel/prepare.sh), the same workload
# script (bench/kernel/guest-bench.sh, with bench/host/host-lib.sh as its platform) and the
# same timer (bench/kernel/ubbench.c). Not a test: run it by hand or through bench/run.mjs,
# as root (loop devices, mounts, drop_caches of the whole machine).
#
#   bench/host/run.sh [--reps N] [--images a,s] [--skip TEST,...] [--cfgs CFG,...] [--write]
#                     [--json FILE]
#
#   --reps N      repetitions of every measurement (default 5)
#   --images      which images (default a,s; s = the synthetic one)
#   --skip        leave tests out (as bench/kernel/run.sh: mount, mem, walk-cold, ..., share)
#   --cfgs        configs (default ext4,erofs,overlay,fuse,fuse-shared,mergerfs; ext4 always)
#   --write       put the tables into bench/host/README.md (between its bench markers)
#   --json FILE   also write the figures as JSON (bench/kernel/report.mjs --json)
#
# data.img (ext4) and the erofs images are attached to read-only loop devices; the data disk is
# mounted at $WORK/d, the configs under $WORK/m, all in a private mount namespace. Everything is
# unmounted and detached on exit, failed or not. Env as bench/kernel/run.sh: UB_CACHE,
# UB_BENCH_FILES / UB_BENCH_BIG (synthetic image size), UB_BENCH_PAR, UB_BENCH_RAND; UBB_TRACE=1
# traces the workload script (bash -x, on stderr).
# Raw lines and tables: ${UB_CACHE}/bench/results/host-*.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KB=$REPO/bench/kernel
CACHE=${UB_CACHE:-/var/cache/unionblob-test}
WORK=$CACHE/bench/host
RESULTS=$CACHE/bench/results
log() { echo "host-bench: $*" >&2; }

# The run's mounts live in a mount namespace of its own. In the host's, a namespace that another
# process creates meanwhile (a container, a build sandbox) copies them, and a FUSE server whose
# mount lives on in such a copy never exits and keeps the data disk busy.
if [ -z "${UBB_OWN_NS:-}" ] && [ "$(id -u)" = 0 ]; then
	exec unshare -m --propagation private env UBB_OWN_NS=1 "$0" "$@"
fi

REPS=5 IMAGES=a,s SKIP= CFGS=ext4,erofs,overlay,fuse,fuse-shared,mergerfs WRITE= JSON=
while [ $# -gt 0 ]; do
	case $1 in
	--reps) REPS=$2; shift 2 ;;
	--images) IMAGES=$2; shift 2 ;;
	--skip) SKIP=$2; shift 2 ;;
	--cfgs) CFGS=$2; shift 2 ;;
	--write) WRITE=1; shift ;;
	--json) JSON=$2; shift 2 ;;
	*) sed -n '2,23p' "$0" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { log "run as root (loop devices, mounts, drop_caches)"; exit 1; }
for c in ${CFGS//,/ }; do
	case $c in ext4|erofs|overlay|fuse|fuse-shared|mergerfs) ;; *) log "--cfgs: unknown config $c"; exit 2 ;; esac
done
case ",$CFGS," in *,ext4,*) ;; *) CFGS=ext4,$CFGS ;; esac # every ratio is against it
case ",$CFGS," in *,mergerfs,*) command -v mergerfs >/dev/null || { log "mergerfs is not installed (.ci/install-deps.sh)"; exit 1; } ;; esac
mkdir -p "$WORK" "$RESULTS"
# One bench at a time (shared with bench/kernel: they would measure each other).
exec 8>"$CACHE/bench/.lock"
flock -n 8 || { log "another bench run holds $CACHE/bench/.lock"; exit 1; }

# Everything this run mounted (deepest first) and attached, undone on any exit.
LOOPS=()
cleanup() {
	local m l
	for m in $(awk -v w="$WORK/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" || log "cannot unmount $m"
	done
	for l in "${LOOPS[@]}"; do losetup -d "$l" || log "cannot detach $l"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup # a run killed hard may have left mounts behind

attach() { # VAR FILE: a read-only loop device of FILE into VAR (no subshell: LOOPS must see it)
	local l
	l=$(losetup -r -f --show "$2")
	LOOPS+=("$l")
	printf -v "$1" %s "$l"
}

started=$(date +%s)
log "building ubbench and unionblob-fuse"
mkdir -p "$WORK/bin" "$WORK/d" "$WORK/m"
gcc -O2 -Wall -pthread -o "$WORK/bin/ubbench" "$KB/ubbench.c"
make -s -C "$REPO/mounter/fuse" >&2

log "preparing the data (cached trees; blobs and the ext4 disk are rebuilt)"
read -r DISK EROFS_A EROFS_S EROFS_B < <("$KB/prepare.sh" | tail -n 1) || true
[ -f "${DISK:-}" ] && [ -f "${EROFS_B:-}" ] || { log "bench/kernel/prepare.sh failed"; exit 1; }

attach DATA "$DISK"
attach EA "$EROFS_A"
attach ES "$EROFS_S"
attach EB "$EROFS_B"
mount -t ext4 -o ro "$DATA" "$WORK/d"

log "running the workloads (reps=$REPS images=$IMAGES cfgs=$CFGS${SKIP:+ skip=$SKIP})"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
raw=$RESULTS/host-$stamp.log
set +e
env UBB_HOST_LIB="$HERE/host-lib.sh" UBB_D="$WORK/d" UBB_M="$WORK/m" UBB_DATA="$DATA" \
	UBB_EROFS_a="$EA" UBB_EROFS_s="$ES" UBB_EROFS_b="$EB" UBB_CFGS="${CFGS//,/ }" \
	UBB_FUSE="$REPO/mounter/fuse/unionblob-fuse" PATH="$WORK/bin:$PATH" \
	ubreps="$REPS" ubimages="$IMAGES" ubskip="$SKIP" ubpar="${UB_BENCH_PAR:-1,2,4}" ubrand="${UB_BENCH_RAND:-2000}" \
	bash ${UBB_TRACE:+-x} "$KB/guest-bench.sh" 8>&- | tee "$raw" | grep --line-buffered '^UBB \(error\|info\)' >&2
rc=${PIPESTATUS[0]}
set -e
log "workloads finished in $(($(date +%s) - started)) s since start (status $rc)"
if ! grep -q '^UBB end' "$raw"; then
	log "the workloads did not finish; tail of $raw:"
	tail -n 20 "$raw" >&2
	exit 1
fi

host="$(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores, Linux $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
node "$KB/report.mjs" "$raw" --host "$host" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
	--elapsed "$(($(date +%s) - started))" ${WRITE:+--write "$HERE/README.md"} ${JSON:+--json "$JSON"} | tee "$RESULTS/host-$stamp.md"
log "raw lines: $raw"
