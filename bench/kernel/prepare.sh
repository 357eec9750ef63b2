#!/bin/bash
# Host side of bench/kernel: the data the guest measures. Run by bench/kernel/run.sh.
#
#   bench/kernel/prepare.sh        -> prints "DISK_IMG EROFS_A EROFS_S EROFS_B"
#
# Under ${UB_CACHE:-/var/cache/unionblob-test}/bench/data-FILES-BIG (cached across runs, keyed
# by VERSION; one directory per synthetic size, so the quick and full suites keep theirs; only
# the unionblob blobs and stores are rebuilt each run, since they depend on the compiler):
#   synth-oci/          node bench/gen-synthetic.mjs $UB_BENCH_FILES --big $UB_BENCH_BIG
#   disk/               the root of the ext4 data disk (mkfs.ext4 -d):
#     t/a, t/b, t/s       the trees unpacked: images a and b = umoci's reference unpacks
#                         (cp -a; b shares a's base layer); synthetic = its one layer untarred
#     o/a/1..3, o/b/2     image a's layers, each in its own directory in overlayfs's format
#                         (overlay-layers.py); b's base layer is o/a/1 (the same layer, shared
#                         as containerd's overlayfs snapshotter shares it); the synthetic
#                         image's one layer is t/s itself
#     o/empty             an empty directory: overlayfs without an upper wants two lowers
#     u/a.ub, u/b.ub, u/store-a   cfs build of images a and b into one object store;
#                         u/s.ub, u/store-s
#   a.erofs, b.erofs, s.erofs    mkfs.erofs of the same trees (erofs-utils defaults:
#                       uncompressed); images a and b without their 255-byte names (see below)
#   data.img            the ext4 disk image, made fresh each run
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${UB_CACHE:-/var/cache/unionblob-test}
FILES=${UB_BENCH_FILES:-100000}
BIG=${UB_BENCH_BIG:-209715200}
B=$CACHE/bench/data-$FILES-$BIG
VERSION="bench-data-2 files=$FILES big=$BIG"
log() { echo "bench-prepare: $*" >&2; }

for t in mkfs.ext4 mkfs.erofs tar python3 node; do
	command -v $t >/dev/null || { log "missing $t (apt: e2fsprogs erofs-utils tar python3)"; exit 1; }
done
mkdir -p "$B"

# erofs_without_long_names TREE IMAGE: mkfs.erofs of a copy of TREE minus names of 255 bytes
erofs_without_long_names() {
	rm -rf "$B/erofs-src"
	cp -a "$1" "$B/erofs-src"
	python3 - "$B/erofs-src" <<-'EOF'
		import os, shutil, sys
		for root, ds, fs in os.walk(os.fsencode(sys.argv[1])):
		    for n in list(ds) + fs:
		        if len(n) >= 255:
		            st = os.lstat(root)
		            p = os.path.join(root, n)
		            shutil.rmtree(p) if n in ds else os.unlink(p)
		            if n in ds:
		                ds.remove(n)
		            os.utime(root, ns=(st.st_atime_ns, st.st_mtime_ns))
	EOF
	mkfs.erofs "$2" "$B/erofs-src" 2>"$2.log" >&2 || { log "mkfs.erofs failed: $2.log"; exit 1; }
	rm -rf "$B/erofs-src"
}

IMAGES_JSON=$(bash "$REPO/test/fixtures/make-images.sh" 2>"$B/make-images.log" | tail -n 1) ||
	{ log "test/fixtures/make-images.sh failed, see $B/make-images.log"; exit 1; }
read -r LAYOUT REF_A REF_B < <(node -e '
	const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
	console.log(j.layout, j.images.a.reference, j.images.b.reference);' "$IMAGES_JSON")

# ---- cached: synthetic image, trees, overlay layers, erofs images ---------------------------
if [ "$(cat "$B/.version" 2>/dev/null)" != "$VERSION" ]; then
	log "building the cached trees ($VERSION)"
	rm -rf "$B/synth-oci" "$B/disk" "$B/a.erofs" "$B/b.erofs" "$B/s.erofs" "$B/.version"
	node "$REPO/bench/gen-synthetic.mjs" "$FILES" "$B/synth-oci" --big "$BIG" >&2
	mkdir -p "$B/disk/t" "$B/disk/o/a" "$B/disk/o/b"
	cp -a "$REF_A" "$B/disk/t/a"
	cp -a "$REF_B" "$B/disk/t/b"
	python3 "$HERE/overlay-layers.py" "$LAYOUT" a "$B/disk/o/a"
	python3 "$HERE/overlay-layers.py" "$LAYOUT" b "$B/disk/o/b-all"
	mv "$B/disk/o/b-all/2" "$B/disk/o/b/2"
	rm -rf "$B/disk/o/b-all"
	layer=$(node -e '
		const fs = require("fs"), p = require("path"), d = process.argv[1];
		const idx = JSON.parse(fs.readFileSync(p.join(d, "index.json")));
		const man = JSON.parse(fs.readFileSync(p.join(d, "blobs/sha256", idx.manifests[0].digest.slice(7))));
		console.log(p.join(d, "blobs/sha256", man.layers[0].digest.slice(7)));' "$B/synth-oci")
	mkdir -p "$B/disk/t/s"
	tar --numeric-owner -xpf "$layer" -C "$B/disk/t/s"
	# erofs-utils 1.5 (Debian 12's) cuts the last byte of 255-byte names and then fails
	# (ENOENT): images a and b's erofs trees go without their 255-byte test names.
	erofs_without_long_names "$REF_A" "$B/a.erofs"
	erofs_without_long_names "$REF_B" "$B/b.erofs"
	mkfs.erofs "$B/s.erofs" "$B/disk/t/s" 2>"$B/mkfs-erofs-s.log" >&2 ||
		{ log "mkfs.erofs failed: $B/mkfs-erofs-s.log"; exit 1; }
	echo "$VERSION" >"$B/.version"
fi

# ---- every run: the unionblob blobs and stores (they depend on the compiler) ----------------
if [ ! -f "$REPO/dist/compiler/cli.js" ] || [ -n "$(find "$REPO/compiler" "$REPO/format" -name '*.ts' -newer "$REPO/dist/compiler/cli.js" | head -1)" ]; then
	log "compiling TypeScript (dist/)"
	(cd "$REPO" && npx tsc -p tsconfig.json) >&2 || log "tsc failed; using the existing dist/"
fi
# Reused while nothing they depend on changed: the compiler's code (dist/), the cached trees'
# version and this script. mkfs.ext4 -d alone is 20-60 s (1-2 GB), and the kernel and host suites
# of one bench run would each pay it.
KEY="$VERSION $(cat "$0" $(find "$REPO/dist/compiler" "$REPO/dist/format" -name '*.js' | sort) | sha256sum | cut -c1-16)"
if [ "$(cat "$B/.data-key" 2>/dev/null)" = "$KEY" ] && [ -f "$B/data.img" ]; then
	log "reusing $B/data.img (compiler and data unchanged)"
	echo "$B/data.img $B/a.erofs $B/s.erofs $B/b.erofs"
	exit 0
fi
rm -f "$B/.data-key"
rm -rf "$B/disk/u"
mkdir -p "$B/disk/u" "$B/disk/o/empty"
log "cfs build: images a and b (one store), synthetic"
node "$REPO/bin/cfs" build "$LAYOUT:a" -o "$B/disk/u/a.ub" --store "$B/disk/u/store-a" --json >"$B/cfs-a.json"
node "$REPO/bin/cfs" build "$LAYOUT:b" -o "$B/disk/u/b.ub" --store "$B/disk/u/store-a" --json >"$B/cfs-b.json"
node "$REPO/bin/cfs" build "$B/synth-oci:latest" -o "$B/disk/u/s.ub" --store "$B/disk/u/store-s" --json >"$B/cfs-s.json"

# ---- the ext4 data disk ----------------------------------------------------------------------
mb=$(du -sm "$B/disk" | cut -f1)
inodes=$(find "$B/disk" -xdev | wc -l)
log "mkfs.ext4 -d: ${mb} MB, $inodes inodes"
rm -f "$B/data.img"
mkfs.ext4 -q -F -b 4096 -N $((inodes * 5 / 4 + 10000)) -L ubbench -d "$B/disk" "$B/data.img" "$((mb * 5 / 4 + 256))M" >&2
echo "$KEY" >"$B/.data-key"
echo "$B/data.img $B/a.erofs $B/s.erofs $B/b.erofs"
