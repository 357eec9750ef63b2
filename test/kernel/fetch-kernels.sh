#!/bin/bash
# Download Debian kernels (image + headers) for the module tests, without installing them.
#
#   test/kernel/fetch-kernels.sh [6.1] [6.12]      (default: both)
#
# Picks the newest release apt currently offers through the meta packages
# (linux-image-amd64 for bookworm's 6.1, linux-image-6.12-amd64 for bookworm-security's
# 6.12), so nothing breaks when Debian drops an old ABI. Pin one with UB_KREL_6_1=... or
# UB_KREL_6_12=... (a release string such as 6.1.0-56-amd64).
#
# Result, per release REL, under ${UB_CACHE:-/var/cache/unionblob-test}/kernels/REL/:
#   root/            the packages extracted with dpkg -x
#   vmlinuz          the kernel
#   kdir             a file holding the path of the headers tree to build against
#   modules          symlink to root/{usr/,}lib/modules/REL
# and kernels/FLAVOUR.release holds REL.  Prints "FLAVOUR REL" lines on stdout.
set -euo pipefail

CACHE=${UB_CACHE:-/var/cache/unionblob-test}
KDIR_ROOT=$CACHE/kernels
mkdir -p "$KDIR_ROOT"
log() { echo "fetch-kernels: $*" >&2; }

flavours=("$@")
[ ${#flavours[@]} -gt 0 ] || flavours=(6.1 6.12)

# depends_of PKG PATTERN: the first Depends: of PKG matching the extended regex PATTERN
depends_of() {
	apt-cache depends "$1" 2>/dev/null | sed -n 's/^ *\(Pre\)\{0,1\}Depends: //p' |
		grep -E "$2" | head -n1 || true
}

resolve() {
	local flav=$1 meta pat pin
	case $flav in
	6.1)  meta=linux-image-amd64;      pat='^linux-image-6\.1\.0-[0-9]+-amd64$'; pin=${UB_KREL_6_1:-} ;;
	6.12) meta=linux-image-6.12-amd64; pat='^linux-image-6\.12\.[0-9]+\+deb12-amd64$'; pin=${UB_KREL_6_12:-} ;;
	*) log "unknown flavour $flav (want 6.1 or 6.12)"; return 1 ;;
	esac
	if [ -n "$pin" ]; then echo "$pin"; return; fi
	local img
	img=$(depends_of $meta "$pat")
	if [ -z "$img" ]; then
		# apt lists missing or stale (fresh machine): refresh once.
		log "apt-cache has no $meta candidate; running apt-get update"
		apt-get update -qq >&2 || true
		img=$(depends_of $meta "$pat")
	fi
	[ -n "$img" ] || { log "cannot resolve a $flav kernel from $meta"; return 1; }
	echo "${img#linux-image-}"
}

fetch() {
	local flav=$1 rel=$2 dir=$KDIR_ROOT/$2
	if [ -e "$dir/.done" ]; then
		log "$rel already in $dir"
	else
		log "downloading $rel"
		rm -rf "$dir"
		mkdir -p "$dir/debs" "$dir/root"
		local hdr=linux-headers-$rel pkgs
		pkgs="linux-image-$rel $hdr $(apt-cache depends $hdr | sed -n 's/^ *Depends: //p' |
			grep -E '^linux-(headers-.*-common|kbuild-)' | tr '\n' ' ')"
		# apt-get download writes into the current directory and runs as _apt
		# when it can; a world-writable temp dir keeps it quiet.
		(cd "$dir/debs" && chmod 777 . && apt-get download -qq $pkgs >&2)
		for d in "$dir"/debs/*.deb; do dpkg -x "$d" "$dir/root"; done
		rm -rf "$dir/debs"
		local hroot=$dir/root/usr/src/linux-headers-$rel
		[ -f "$hroot/Makefile" ] || { log "no headers tree in $hroot"; return 1; }
		# The arch headers' Makefile includes the common tree by absolute path.
		sed -i "s#^include /usr/src/#include $dir/root/usr/src/#" "$hroot/Makefile"
		echo "$hroot" >"$dir/kdir"
		local m
		for m in "$dir/root/lib/modules/$rel" "$dir/root/usr/lib/modules/$rel"; do
			[ -d "$m" ] && ln -sfn "$m" "$dir/modules"
		done
		ln -sfn "root/boot/vmlinuz-$rel" "$dir/vmlinuz"
		[ -f "$dir/vmlinuz" ] && [ -d "$dir/modules/kernel" ] || { log "incomplete image for $rel"; return 1; }
		touch "$dir/.done"
	fi
	echo "$rel" >"$KDIR_ROOT/$flav.release"
	echo "$flav $rel"
}

for f in "${flavours[@]}"; do
	rel=$(resolve "$f")
	fetch "$f" "$rel"
done
