#!/bin/bash
# The userspace side of the kernel backend, end to end, under qemu (TCG): boots Debian's kernel
# with unionblob.ko into a bookworm userland (the cached minbase rootfs of
# test/fixtures/make-images.sh + this host's node) with a copy of this checkout, and runs
# test/kernel/userspace-guest.mjs there: `cfs mount --backend kernel|auto`, fsconfig messages,
# the writable upper, `cfs install-helper` + `mount -t unionblob` + fstab, `cfs umount`, the
# snapshotter on the module (also driven by containerd: this host's containerd, ctr, shim and
# runc, a container run on it), and
# the fs-verity tests of test/addon.test.mjs (this host's kernel has no CONFIG_FS_VERITY).
#
#   test/kernel/userspace.sh [6.1] [6.12]        (default: both)
#
# Prints, per kernel:   UBKERNEL FLAVOUR RELEASE
#                       UBTEST ok|fail NAME [REASON]   (one per guest check)
#                       UBDIAG NAME ...                (details of a failure)
# Exit status 0 only if every kernel booted, ran to the end and had no failure.
#
# Disks (NVMe): the system image (ext4, cached in ${UB_CACHE}/userspace/, attached with
# snapshot=on so the guest never changes it) and a fresh work disk per boot
# (`mkfs.ext4 -b 4096 -O verity -d`: the checkout at /work/main, the host-built blob and store
# at /work/kb, scratch space at /work/t). Needs dist/ and the addon built (npm test does both).
# Env: UB_CACHE, UB_QEMU_TIMEOUT (s, default 600), UB_KEEP=1 keeps the work disk.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${UB_CACHE:-/var/cache/unionblob-test}
WORK=$CACHE/work-userspace
TIMEOUT=${UB_QEMU_TIMEOUT:-600}
SYS_VERSION=2   # bump when the system image's recipe changes
log() { echo "kernel-userspace: $*" >&2; }

flavours=("$@")
[ ${#flavours[@]} -gt 0 ] || flavours=(6.1 6.12)

for f in dist/compiler/cli.js dist/mounter/addon.js mounter/addon/build/Release/unionblob.node; do
	[ -e "$REPO/$f" ] || { echo "UBTEST fail prerequisites $f missing: run npx tsc -p tsconfig.json && npm run build:addon"; exit 1; }
done
"$HERE/fetch-kernels.sh" "${flavours[@]}" >/dev/null
mkdir -p "$WORK" "$CACHE/userspace"
cleanup() {
	rm -rf "$WORK"/sysroot.* "$WORK"/initrd.* "$CACHE"/userspace/*.tmp
	[ -n "${UB_KEEP:-}" ] || rm -rf "$WORK/fx" "$WORK"/*/work.img
}
trap cleanup EXIT

# ---- the system image: bookworm minbase + node, fsverity, mkfs.erofs, getfattr, containerd, busybox
# test/fixtures/make-images.sh caches the debootstrap'ed rootfs (only prints when cached).
IMAGES_JSON=$(bash "$REPO/test/fixtures/make-images.sh" 2>"$WORK/make-images.log" | tail -n 1) || true
ROOTFS_TAR=
[ -f "$IMAGES_JSON" ] && ROOTFS_TAR=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).rootfsTar ?? "")' "$IMAGES_JSON")
[ -f "$ROOTFS_TAR" ] || { echo "UBTEST fail system-image no rootfs tarball (test/fixtures/make-images.sh, see $WORK/make-images.log)"; exit 1; }
TOOLS="$(command -v node) /usr/bin/fsverity /usr/bin/mkfs.erofs /usr/bin/getfattr /usr/bin/setfattr /usr/bin/containerd /usr/bin/ctr /usr/bin/containerd-shim-runc-v2 /usr/sbin/runc"
# The addon itself comes with the work disk; the libraries it links (libisal) go into the system.
ADDON_LIBS=$(ldd "$REPO/mounter/addon/build/Release/unionblob.node" | awk '/=> \// {print $3}' | sort)
key=$( {
	echo "$SYS_VERSION $(stat -c '%n %s %Y' "$ROOTFS_TAR")"
	for t in $TOOLS /bin/busybox $ADDON_LIBS; do stat -c '%n %s %Y' "$(readlink -f "$t")"; done
} | sha256sum | cut -c1-16)
SYS_IMG=$CACHE/userspace/system-$key.img
if [ ! -f "$SYS_IMG" ]; then
	log "building the guest system image ($SYS_IMG)"
	root=$(mktemp -d "$WORK/sysroot.XXXXXX")
	tar -xf "$ROOTFS_TAR" -C "$root"
	for b in $TOOLS; do
		cp "$(readlink -f "$b")" "$root/usr/bin/$(basename "$b")"
		for lib in $(ldd "$b" | awk '/=>/ {print $3}'); do
			[ -e "$root/usr/lib/x86_64-linux-gnu/$(basename "$lib")" ] || cp -L "$lib" "$root/usr/lib/x86_64-linux-gnu/"
		done
	done
	for lib in $ADDON_LIBS; do
		[ -e "$root/usr/lib/x86_64-linux-gnu/$(basename "$lib")" ] || cp -L "$lib" "$root/usr/lib/x86_64-linux-gnu/"
	done
	cp /bin/busybox "$root/usr/local/bin/busybox"
	# the .proto files `cfs snapshotter` loads (snapshotter/proto.ts: containerd's API, gogo, google's)
	for d in /usr/share/gocode/src/github.com/containerd/containerd/api /usr/share/gocode/src/github.com/gogo/protobuf /usr/include/google/protobuf; do
		[ -d "$d" ] && (cd / && find "${d#/}" -name '*.proto' -print0 | tar --null -T - -cf -) | tar -xf - -C "$root"
	done
	mkdir -p "$root/work"
	mb=$(($(du -sm "$root" | cut -f1) + 256))
	rm -f "$CACHE"/userspace/system-*.img
	mkfs.ext4 -q -F -b 4096 -L ubsys -d "$root" "$SYS_IMG.tmp" "${mb}M" >/dev/null
	mv "$SYS_IMG.tmp" "$SYS_IMG"
	rm -rf "$root"
fi

# ---- the work disk's content (shared by the kernels; the disk itself is made per boot) ------
fx=$WORK/fx
rm -rf "$fx"
mkdir -p "$fx/main" "$fx/kb" "$fx/t"
(cd "$REPO" && tar --exclude=./.git --exclude=./bench --exclude=./demo-out --exclude=./test/.cache -cf - .) |
	tar -xf - -C "$fx/main"
log "building the blob on the host (examples/hello-oci.tar)"
node "$REPO/bin/cfs" build "$REPO/examples/hello-oci.tar" -o "$fx/kb/hello.ub" --store "$fx/kb/store" --json >"$fx/kb/build.json"
DISK_MB=$(($(du -sm "$fx" | cut -f1) + 768))

. "$HERE/lib.sh"
# crc32c_generic first: ext4 only soft-depends on it and there is no modprobe. loop and erofs
# for test/addon.test.mjs (built in where they are not found).
GUEST_MODULES="crc32c_generic ext4 nvme overlay loop erofs"

status=0
for flav in "${flavours[@]}"; do
	if ! kt_begin_flavour "$flav"; then
		status=1
		continue
	fi
	rel=$KT_REL ko=$KT_KO
	cp "$ko" "$fx/kb/unionblob.ko"
	kt_make_initramfs "$rel" "$ko" "$WORK/$rel/initrd.gz" "$HERE/userspace-init.sh" "$GUEST_MODULES"
	disk=$WORK/$rel/work.img
	rm -f "$disk" "$WORK/$rel/console.log"
	mkfs.ext4 -q -F -b 4096 -O verity -L ubwork -d "$fx" "$disk" "${DISK_MB}M" >/dev/null
	log "$flav ($rel): booting"
	start=$(date +%s)
	set +e
	# One qemu at a time on this machine: the module tests (run.sh) take the same lock.
	(
		flock -w "$TIMEOUT" 9 || log "waited ${TIMEOUT}s for $CACHE/qemu.lock; booting anyway"
		kt_qemu "$rel" "$WORK/$rel/initrd.gz" "$WORK/$rel/console.log" "$TIMEOUT" \
			"console=ttyS0 loglevel=1 panic=-1" 2048 \
			-drive "file=$SYS_IMG,if=none,id=n0,format=raw,snapshot=on" -device nvme,serial=ubsys,drive=n0 \
			-drive "file=$disk,if=none,id=n1,format=raw" -device nvme,serial=ubwork,drive=n1
	) 9>"$CACHE/qemu.lock"
	rc=$?
	set -e
	log "$flav ($rel): guest finished in $(($(date +%s) - start)) s (qemu rc $rc)"
	kt_guest_result "$WORK/$rel/console.log" "$rc" 'UBTEST|UBDIAG' || status=1
	for f in dmesg.txt ava.log; do
		debugfs -R "cat /$f" "$disk" >"$WORK/$rel/$f" 2>/dev/null || true
	done
	[ -n "${UB_KEEP:-}" ] || rm -f "$disk"
done
exit $status
