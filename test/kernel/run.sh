#!/bin/bash
# Kernel module tests under qemu (TCG): build unionblob.ko for Debian's kernels,
# boot each with an initramfs (busybox + helper + modules) and a store disk,
# and collect the guest's check results from the serial console.
#
#   test/kernel/run.sh [6.1] [6.12]        (default: both)
#
# Prints, per kernel:   UBKERNEL FLAVOUR RELEASE
#                       UBTEST ok|fail NAME [REASON]   (one per guest check)
#                       UBDIAG ...                     (details)
# Exit status 0 only if every kernel booted, ran to the end and had no failure.
#
# Needs (apt): qemu-system-x86 busybox-static e2fsprogs cpio xz-utils gcc libc6-dev
# make binutils (strings), plus what fetch-kernels.sh uses (apt-get, dpkg).
# Env: UB_CACHE (default /var/cache/unionblob-test), UB_QEMU_TIMEOUT (s, default 600),
#      UB_KEEP=1 keeps the work dir's per-run files, UB_CORRUPT_COUNT (default 1000),
#      UB_BENCH=1 adds the guest's bench section (UBBENCH lines; numbers, not checks).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${UB_CACHE:-/var/cache/unionblob-test}
WORK=$CACHE/work
TIMEOUT=${UB_QEMU_TIMEOUT:-600}
log() { echo "kernel-test: $*" >&2; }

flavours=("$@")
[ ${#flavours[@]} -gt 0 ] || flavours=(6.1 6.12)

"$HERE/fetch-kernels.sh" "${flavours[@]}" >/dev/null
mkdir -p "$WORK"

# ---- host-side pieces shared by all kernels -----------------------------------
log "building the guest helper"
gcc -static -O2 -Wall -I"$REPO/mounter/fuse" -o "$WORK/ubt" "$HERE/helper/ubt.c" "$REPO/mounter/fuse/sha256.c"

if [ ! -f "$REPO/dist/format/index.js" ] || [ -n "$(find "$REPO/format" -name '*.ts' -newer "$REPO/dist/format/index.js" | head -1)" ]; then
	log "compiling TypeScript (dist/)"
	(cd "$REPO" && npx tsc -p tsconfig.json) >&2 || log "tsc failed; using the existing dist/"
fi
# The Debian images of the differential tests (cached; needs root and their tools).
IMAGES_JSON=
if [ "${UB_KERNEL_IMAGES:-1}" != 0 ]; then
	if IMAGES_JSON=$(bash "$REPO/test/fixtures/make-images.sh" 2>"$WORK/make-images.log" | tail -n 1) &&
		[ -f "$IMAGES_JSON" ]; then
		log "real images: $IMAGES_JSON"
	else
		log "no real images (test/fixtures/make-images.sh failed, see $WORK/make-images.log)"
		IMAGES_JSON=
	fi
fi
log "making fixtures"
UB_IMAGES_JSON=$IMAGES_JSON UB_UBT="$WORK/ubt" node "$HERE/make-fixtures.mjs" "$WORK/fx" >/dev/null
DISK_MB=$(($(du -sm "$WORK/fx/disk" | cut -f1) * 3 / 2 + 128))

# ---- module build, initramfs, qemu: test/kernel/lib.sh (shared with bench/kernel) -------
. "$HERE/lib.sh"

# crc32c_generic first: ext4 only soft-depends on it and there is no modprobe.
GUEST_MODULES="crc32c_generic ext4 nvme overlay"

status=0
for flav in "${flavours[@]}"; do
	if ! kt_begin_flavour "$flav"; then
		status=1
		continue
	fi
	rel=$KT_REL ko=$KT_KO
	echo "UBTEST ok build"
	kt_make_initramfs "$rel" "$ko" "$WORK/$rel/initrd.gz" "$HERE/guest-init.sh" "$GUEST_MODULES" "$WORK/ubt:bin/ubt"
	# A fresh store disk per boot: the guest enables fs-verity on it.
	rm -f "$WORK/$rel/store.img"
	mkfs.ext4 -q -b 4096 -O verity -L ubstore -d "$WORK/fx/disk" "$WORK/$rel/store.img" "${DISK_MB}M" >/dev/null
	log "$flav ($rel): booting"
	start=$(date +%s)
	set +e
	# One qemu at a time (test/kernel/userspace.sh takes the same lock; ava runs files in parallel).
	(
		flock -w "$TIMEOUT" 9 || log "waited ${TIMEOUT}s for $CACHE/qemu.lock; booting anyway"
		kt_qemu "$rel" "$WORK/$rel/initrd.gz" "$WORK/$rel/console.log" "$TIMEOUT" \
			"console=ttyS0 loglevel=1 panic=-1${UB_BENCH:+ ubbench}" 1024 \
			-drive "file=$WORK/$rel/store.img,if=none,id=n0,format=raw" \
			-device nvme,serial=ub0,drive=n0
	) 9>"$CACHE/qemu.lock"
	rc=$?
	set -e
	log "$flav ($rel): guest finished in $(($(date +%s) - start)) s (qemu rc $rc)"
	kt_guest_result "$WORK/$rel/console.log" "$rc" 'UBTEST|UBDIAG|UBBENCH' || status=1
	debugfs -R 'cat /dmesg.txt' "$WORK/$rel/store.img" >"$WORK/$rel/dmesg.txt" 2>/dev/null || true
	# guest manifests of the real images, for kernel.test.mjs
	rm -rf "$WORK/$rel/out"
	debugfs -R "rdump /out $WORK/$rel" "$WORK/$rel/store.img" >/dev/null 2>&1 || true
	echo "UBOUT $WORK/$rel/out $WORK/fx/images.json"
	[ -n "${UB_KEEP:-}" ] || rm -f "$WORK/$rel/store.img"
done
exit $status
