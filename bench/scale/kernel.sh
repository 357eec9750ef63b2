#!/bin/bash
# The scale series' kernel side (issue #6), called by bench/scale/run.mjs once the host series
# has made the disks: boots Debian's 6.12 under qemu (TCG) with unionblob.ko, every disk on
# emulated NVMe, and prints the guest's result lines (UBS ..., UBE ...; bench/scale/guest.sh).
#
#   bench/scale/kernel.sh REPS SIZES SPARSE SERIAL=DISK...
#
#   REPS     rounds of every measurement;  SIZES  N,N,... (disks ubtN and ubbN must be given)
#   SPARSE   1 when the disk ubsparse is given, else 0
# Env: UB_CACHE, UB_SCALE_MEM (guest MiB, default 4096), UB_SCALE_TIMEOUT (s, default 3600).
# Reuses test/kernel/fetch-kernels.sh and test/kernel/lib.sh (module build, initramfs, qemu).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${UB_CACHE:-/var/cache/unionblob-test}
WORK=$CACHE/bench-scale/kernel
log() { echo "bench/scale kernel: $*" >&2; }

[ $# -ge 4 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
REPS=$1 SIZES=$2 SPARSE=$3
shift 3
mkdir -p "$WORK" "$CACHE/bench"
# one guest bench at a time (bench/kernel/run.sh takes the same lock)
exec 8>"$CACHE/bench/.lock"
flock -n 8 || { log "another guest bench holds $CACHE/bench/.lock"; exit 1; }

"$REPO/test/kernel/fetch-kernels.sh" 6.12 >/dev/null
rel=$(cat "$CACHE/kernels/6.12.release")
. "$REPO/test/kernel/lib.sh"
log "6.12 ($rel): building the module, ubbench, lookup and the initramfs"
gcc -static -O2 -Wall -pthread -o "$WORK/ubbench" "$REPO/bench/kernel/ubbench.c"
gcc -static -O2 -Wall -o "$WORK/lookup" "$HERE/lookup.c"
ko=$(kt_build_module "$rel")
kt_make_initramfs "$rel" "$ko" "$WORK/initrd.gz" "$HERE/guest.sh" "crc32c_generic ext4 nvme" \
	"$WORK/ubbench:bin/ubbench" "$WORK/lookup:bin/lookup" \
	"$REPO/bench/kernel/guest-lib.sh:lib/guest-lib.sh"

drives=()
i=0
for d in "$@"; do
	drives+=(-drive "file=${d#*=},if=none,id=d$i,format=raw" -device "nvme,serial=${d%%=*},drive=d$i")
	i=$((i + 1))
done
console=$WORK/console.log
started=$(date +%s)
log "booting (reps=$REPS sizes=$SIZES sparse=$SPARSE, $i disks)"
set +e
kt_qemu "$rel" "$WORK/initrd.gz" "$console" "${UB_SCALE_TIMEOUT:-3600}" \
	"console=ttyS0 loglevel=1 panic=-1 ubsizes=$SIZES ubreps=$REPS ubsparse=$SPARSE" \
	"${UB_SCALE_MEM:-4096}" "${drives[@]}"
rc=$?
set -e
log "guest finished in $(($(date +%s) - started)) s (qemu rc $rc)"
# (-o: the first line may follow the firmware's terminal escapes)
tr -d '\r' <"$console" | grep -aoE 'UB[SE] .*' || true
if ! grep -aq 'UBS end' "$console"; then
	log "the guest did not finish; tail of $console:"
	tail -n 30 "$console" >&2
	exit 1
fi
