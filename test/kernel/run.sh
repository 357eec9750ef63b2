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
#      UB_KEEP=1 keeps the work dir's per-run files, UB_CORRUPT_COUNT (default 200),
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
gcc -static -O2 -Wall -o "$WORK/ubt" "$HERE/helper/ubt.c"

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

# ---- modules for the initramfs ----------------------------------------------------
# Index NAME -> path of every module of a kernel, '-' and '_' alike.
declare -A MODPATH
index_modules() {
	MODPATH=()
	local f n
	while IFS= read -r f; do
		n=$(basename "$f")
		n=${n%.xz}
		n=${n%.ko}
		MODPATH[${n//-/_}]=$f
	done < <(find "$1/kernel" -name '*.ko' -o -name '*.ko.xz')
}

module_depends() {
	local f=${MODPATH[$1]}
	if [[ $f == *.xz ]]; then xz -dc "$f" | strings -a; else strings -a "$f"; fi |
		sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}

# Emit NAME's dependencies then NAME (post-order), once each.
declare -A SEEN
visit() {
	local m=${1//-/_} d
	[ -n "${SEEN[$m]:-}" ] && return
	SEEN[$m]=1
	[ -n "${MODPATH[$m]:-}" ] || { log "module $m not found (built in?)"; return; }
	for d in $(module_depends "$m"); do visit "$d"; done
	ORDER+=("$m")
}

# crc32c_generic first: ext4 only soft-depends on it and there is no modprobe.
GUEST_MODULES="crc32c_generic ext4 nvme overlay"

make_initramfs() {
	local rel=$1 ko=$2 out=$3 root m
	root=$(mktemp -d "$WORK/initrd.XXXXXX")
	chmod 755 "$root"   # the guest's /: other users run the helper too
	mkdir -p "$root/bin" "$root/modules" "$root/proc" "$root/sys" "$root/dev"
	cp /bin/busybox "$root/bin/busybox"
	cp "$WORK/ubt" "$root/bin/ubt"
	cp "$HERE/guest-init.sh" "$root/init"
	chmod +x "$root/init"
	index_modules "$CACHE/kernels/$rel/modules"
	SEEN=()
	ORDER=()
	for m in $GUEST_MODULES; do visit "$m"; done
	for m in "${ORDER[@]}"; do
		local f=${MODPATH[$m]}
		if [[ $f == *.xz ]]; then xz -dc "$f" >"$root/modules/$m.ko"; else cp "$f" "$root/modules/$m.ko"; fi
		echo "$m.ko" >>"$root/modules/order"
	done
	cp "$ko" "$root/modules/unionblob.ko"
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
	rm -rf "$root"
}

build_module() {
	local rel=$1 src=$WORK/$1/src kdir
	kdir=$(cat "$CACHE/kernels/$rel/kdir")
	rm -rf "$src"
	make -s -C "$REPO/kmod" dist DEST="$src" >/dev/null || return 1
	# BTF needs pahole and the headers' vmlinux; a module without it loads fine.
	make -s -C "$kdir" M="$src" CONFIG_DEBUG_INFO_BTF_MODULES= modules >"$WORK/$rel/build.log" 2>&1 || {
		cat "$WORK/$rel/build.log" >&2
		return 1
	}
	if grep -E 'warning:|error:' "$WORK/$rel/build.log" >&2; then log "build of $rel has warnings"; fi
	echo "$src/unionblob.ko"
}

status=0
for flav in "${flavours[@]}"; do
	rel=$(cat "$CACHE/kernels/$flav.release")
	echo "UBKERNEL $flav $rel"
	mkdir -p "$WORK/$rel"
	log "$flav ($rel): building the module"
	if ! ko=$(build_module "$rel"); then
		echo "UBTEST fail build module build failed"
		status=1
		continue
	fi
	echo "UBTEST ok build"
	make_initramfs "$rel" "$ko" "$WORK/$rel/initrd.gz"
	# A fresh store disk per boot: the guest enables fs-verity on it.
	rm -f "$WORK/$rel/store.img"
	mkfs.ext4 -q -b 4096 -O verity -L ubstore -d "$WORK/fx/disk" "$WORK/$rel/store.img" "${DISK_MB}M" >/dev/null
	log "$flav ($rel): booting"
	start=$(date +%s)
	set +e
	timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 \
		-accel tcg,thread=multi -cpu max -m 1024 -smp 2 \
		-kernel "$CACHE/kernels/$rel/vmlinuz" -initrd "$WORK/$rel/initrd.gz" \
		-append "console=ttyS0 loglevel=1 panic=-1${UB_BENCH:+ ubbench}" \
		-drive "file=$WORK/$rel/store.img,if=none,id=n0,format=raw" \
		-device nvme,serial=ub0,drive=n0 \
		-nographic -no-reboot -monitor none </dev/null >"$WORK/$rel/console.log" 2>&1
	rc=$?
	set -e
	log "$flav ($rel): guest finished in $(($(date +%s) - start)) s (qemu rc $rc)"
	tr -d '\r' <"$WORK/$rel/console.log" | grep -aE '^(UBTEST|UBDIAG|UBBENCH)' || true
	if ! grep -aq '^UBTEST end' "$WORK/$rel/console.log"; then
		echo "UBTEST fail guest-finished guest did not finish (qemu rc $rc); tail of the console:"
		tail -n 40 "$WORK/$rel/console.log" | tr -d '\r' | sed 's/^/UBDIAG console /'
		status=1
	fi
	grep -aq '^UBTEST fail' "$WORK/$rel/console.log" && status=1
	debugfs -R 'cat /dmesg.txt' "$WORK/$rel/store.img" >"$WORK/$rel/dmesg.txt" 2>/dev/null || true
	# guest manifests of the real images, for kernel.test.mjs
	rm -rf "$WORK/$rel/out"
	debugfs -R "rdump /out $WORK/$rel" "$WORK/$rel/store.img" >/dev/null 2>&1 || true
	echo "UBOUT $WORK/$rel/out $WORK/fx/images.json"
	[ -n "${UB_KEEP:-}" ] || rm -f "$WORK/$rel/store.img"
done
exit $status
