#!/bin/busybox sh
# The bench workloads, timed by ubbench, over every config in $CFGS. Two ways to run it:
#   - as /init of the bench guest (busybox + ubbench; bench/kernel/run.sh): configs ext4
#     erofs overlay unionblob; the settings come from the kernel command line;
#   - on the host (bench/host/run.sh): UBB_HOST_LIB names bench/host/host-lib.sh, which takes
#     the settings and devices from the environment and adds FUSE configs (its mount hooks).
# Prints (on the serial console, or stdout on the host):
#   UBB info KEY=VALUE...                                     the setting
#   UBB img=I cfg=C test=T rep=N KEY=VALUE... us=MICROSECONDS  one measurement
#   UBB error TEXT                                            something did not work
#   UBB end
# Guest disks (NVMe, found by serial): ubdata = ext4 made by prepare.sh (mounted read-only at
# $D), uberofsa / uberofsb / uberofss = the erofs images of images a, b / the synthetic image.
# Settings (kernel command line in the guest, environment on the host): ubreps=N (default 5),
# ubimages=a,s, ubskip=TEST,... (tests to leave out), ubpar=1,2,4 (reader threads), ubrand=N
# (random 4 KiB reads per run, default 2000).
#
# What a platform provides: arg NAME (a setting), D (the ext4 data disk's mount point), M
# (where configs are mounted), DATA (its device), EROFS_a/s/b, CFGS, err, end, and for
# configs other than ext4/erofs/overlay/unionblob: platform_mount IMG CFG [--cold] (prints
# ubbench's line), platform_umount IMG CFG; mem_extra IMG CFG prints the resident kB of a
# config's server process (nothing when it has none).

TAG=UBB
info() { echo "UBB info $*"; }
# mark PHASE: when a phase starts (seconds since boot), so the report can say where a run's time
# goes (the workloads' own timings leave out warm-ups, drops, mounts and sleeps)
mark() { info "t-$1=$(cut -d' ' -f1 /proc/uptime)"; }
if [ -n "${UBB_HOST_LIB:-}" ]; then
	. "$UBB_HOST_LIB"
else
	. /lib/guest-lib.sh   # boot_guest, err, end, load_modules, wait_nvme
	boot_guest
	D=/d M=/m
	CFGS="ext4 erofs overlay unionblob"
	arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n 1; }
	platform_mount() { echo "ERR no config $2"; }
	platform_umount() { err "no config $2"; }
	mem_extra() { :; }
	load_modules
	grep -q erofs /proc/filesystems || err "no erofs in /proc/filesystems"
	wait_nvme 4
	DATA=$(ubbench serial-dev ubdata)
	EROFS_a=$(ubbench serial-dev uberofsa)
	EROFS_s=$(ubbench serial-dev uberofss)
	EROFS_b=$(ubbench serial-dev uberofsb)
	mkdir -p $D $M
	mount -t ext4 -o ro "$DATA" $D || { err "cannot mount $DATA"; end; }
	info "erofs=$(if [ -e /modules/erofs.ko ]; then echo module; else echo built-in; fi) data=$DATA erofs-a=$EROFS_a erofs-s=$EROFS_s"
fi
REPS=$(arg ubreps); REPS=${REPS:-5}
IMAGES=$(arg ubimages | tr ',' ' '); IMAGES=${IMAGES:-a s}
SKIP=",$(arg ubskip),"
PAR=$(arg ubpar | tr ',' ' '); PAR=${PAR:-1 2 4}
RANDN=$(arg ubrand); RANDN=${RANDN:-2000}
# the configs that are mounted per image (ext4 is the data disk itself)
MCFGS=$(for c in $CFGS; do [ $c = ext4 ] || echo $c; done)

info "kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) mem-kB=$(awk '/^MemTotal/ {print $2}' /proc/meminfo) reps=$REPS images=$(echo $IMAGES | tr ' ' ,) cfgs=$(echo $CFGS | tr ' ' ,)"
mark start

# Per image and config: directory, mount arguments, big file.
dir() { # IMG CFG
	case $2 in
	ext4) echo "$D/t/$1" ;;
	*) echo "$M/$2-$1" ;;
	esac
}
lowerdirs() {
	case $1 in
	a) echo $D/o/a/3:$D/o/a/2:$D/o/a/1 ;;
	# one layer: the unpacked tree is the layer's directory; overlayfs without an upper
	# directory refuses a single lower one, so an empty layer goes under it
	s) echo $D/t/s:$D/o/empty ;;
	# b: its own top layer over a's base layer directory (the same layer, shared)
	b) echo $D/o/b/2:$D/o/a/1 ;;
	esac
}
# do_mount IMG CFG [--cold]: mount(2) of one config (or a FUSE server's start), timed by ubbench
do_mount() {
	case $2 in
	erofs) eval "dev=\$EROFS_$1"; ubbench mount $3 erofs "$dev" "$(dir "$1" erofs)" ;;
	overlay) ubbench mount $3 overlay ovl "$(dir "$1" overlay)" "lowerdir=$(lowerdirs "$1")" ;;
	unionblob) ubbench mount $3 unionblob "$1" "$(dir "$1" unionblob)" "descriptor=$D/u/$1.ub,basedir=$D/u/store-$(store "$1")" ;;
	*) platform_mount "$@" ;;
	esac
}
do_umount() { # IMG CFG
	case $2 in
	erofs|overlay|unionblob) umount "$(dir "$1" $2)" ;;
	*) platform_umount "$@" ;;
	esac
}
# a and b share one object store (prepare.sh builds both into store-a)
store() { case $1 in b) echo a ;; *) echo "$1" ;; esac; }
kB() { awk -v k="$1:" '$1 == k {print $2}' /proc/meminfo; }
skip() { case $SKIP in *",$1,"*) return 0 ;; esac; return 1; }
# rec IMG CFG TEST REP OUTPUT...
rec() {
	r="img=$1 cfg=$2 test=$3 rep=$4"
	shift 4
	case "$*" in
	us=*|*" us="*) echo "UBB $r $*" ;;
	*) err "$r: $*" ;;
	esac
}

for img in $IMAGES; do
	for c in $MCFGS; do mkdir -p "$(dir "$img" $c)"; done
	big=
	[ "$img" = s ] && big=data/big

	mark "$img-mount"
	# ---- mount time: mount(2) alone, after drop_caches (cold) and right after an unmount (warm)
	# ext4: the data disk itself, unmounted and mounted again (nothing else mounted from it).
	# FUSE configs (host): from starting the server until its mount answers a stat.
	if ! skip mount; then
		for temp in cold warm; do
			cold=
			[ $temp = cold ] && cold=--cold
			# warm: one untimed mount of each first, so its metadata is cached
			[ $temp = warm ] && for c in $MCFGS; do do_mount "$img" $c >/dev/null && do_umount "$img" $c; done
			for rep in $(seq "$REPS"); do
				rec "$img" ext4 mount-$temp "$rep" "$(ubbench remount-cycle $cold "$DATA" $D ext4)"
				for c in $MCFGS; do
					rec "$img" $c mount-$temp "$rep" "$(do_mount "$img" $c $cold)"
					do_umount "$img" $c
				done
			done
		done
	fi
	mark "$img-mem"
	# ---- memory: Slab and MemAvailable deltas of mount(2) alone, then of a stat walk of the
	# tree (inodes and dentries); after drop_caches, one config mounted at a time. ext4's
	# mount is the whole data disk's. A FUSE server's own memory is in MemAvailable's drop; its
	# resident kB come on the line too (mount-rss-kB, walk-rss-kB).
	if ! skip mem; then
		mount | grep -q " $D " || mount -t ext4 -o ro "$DATA" $D
		for rep in $(seq "$REPS"); do
			for c in $CFGS; do
				if [ $c = ext4 ]; then umount $D; fi
				# slab objects freed by drop_caches go after an RCU grace period: let them
				ubbench drop; sleep 1
				s0=$(kB Slab) a0=$(kB MemAvailable)
				if [ $c = ext4 ]; then t=$(ubbench mount ext4 "$DATA" $D); else t=$(do_mount "$img" $c); fi
				s1=$(kB Slab) a1=$(kB MemAvailable)
				r1=$(mem_extra "$img" $c)
				ubbench walk "$(dir "$img" $c)" >/dev/null
				s2=$(kB Slab) a2=$(kB MemAvailable)
				r2=$(mem_extra "$img" $c)
				rec "$img" $c mem "$rep" "mount-slab-kB=$((s1 - s0)) mount-used-kB=$((a0 - a1)) walk-slab-kB=$((s2 - s0)) walk-used-kB=$((a0 - a2))${r1:+ mount-rss-kB=$r1 walk-rss-kB=$r2} $t"
				if [ $c != ext4 ]; then do_umount "$img" $c; fi
			done
		done
	fi
	mount | grep -q " $D " || mount -t ext4 -o ro "$DATA" $D
	for c in $MCFGS; do
		do_mount "$img" $c >/dev/null || err "mount $img $c failed: $(dmesg | tail -n 3 | tr '\n' '|')"
	done

	mark "$img-walk"
	# ---- metadata walk: stat of every entry; cold = after drop_caches, round robin
	if ! skip walk-cold; then
		for rep in $(seq "$REPS"); do
			for c in $CFGS; do rec "$img" $c walk-cold "$rep" "$(ubbench walk --cold "$(dir "$img" $c)")"; done
		done
	fi
	if ! skip walk-warm; then
		ubbench drop
		for c in $CFGS; do ubbench walk "$(dir "$img" $c)" >/dev/null; done
		for rep in $(seq "$REPS"); do
			for c in $CFGS; do rec "$img" $c walk-warm "$rep" "$(ubbench walk "$(dir "$img" $c)")"; done
		done
	fi

	mark "$img-read"
	# ---- open + read of every file (the list comes from an untimed walk)
	if ! skip read-warm; then
		# all four warm at once (the guest has memory for it; see the free-kB info line)
		ubbench drop
		for c in $CFGS; do ubbench readall "$(dir "$img" $c)" >/dev/null; done
		info "img=$img read-warm-free-kB=$(awk '/^MemFree/ {print $2}' /proc/meminfo) cached-kB=$(awk '/^Cached/ {print $2}' /proc/meminfo)"
		for rep in $(seq "$REPS"); do
			for c in $CFGS; do rec "$img" $c read-warm "$rep" "$(ubbench readall "$(dir "$img" $c)")"; done
		done
	fi
	if ! skip open-warm; then
		# open + close alone (the files stay warm from read-warm): the per-open cost
		for c in $CFGS; do ubbench openall "$(dir "$img" $c)" >/dev/null; done
		for rep in $(seq "$REPS"); do
			for c in $CFGS; do rec "$img" $c open-warm "$rep" "$(ubbench openall "$(dir "$img" $c)")"; done
		done
	fi
	if ! skip read-cold; then
		for rep in $(seq "$REPS"); do
			for c in $CFGS; do rec "$img" $c read-cold "$rep" "$(ubbench readall --cold "$(dir "$img" $c)")"; done
		done
	fi

	mark "$img-seq"
	# ---- sequential read of the big file
	if [ -n "$big" ]; then
		if ! skip seq-cold; then
			for rep in $(seq "$REPS"); do
				for c in $CFGS; do rec "$img" $c seq-cold "$rep" "$(ubbench seq --cold "$(dir "$img" $c)/$big")"; done
			done
		fi
		if ! skip seq-warm; then
			ubbench drop
			for c in $CFGS; do ubbench seq "$(dir "$img" $c)/$big" >/dev/null; done
			for rep in $(seq "$REPS"); do
				for c in $CFGS; do rec "$img" $c seq-warm "$rep" "$(ubbench seq "$(dir "$img" $c)/$big")"; done
			done
		fi
	fi

	mark "$img-rand"
	# ---- random 4 KiB reads in the big file (the same offsets everywhere)
	if [ -n "$big" ]; then
		if ! skip rand-cold; then
			for rep in $(seq "$REPS"); do
				for c in $CFGS; do rec "$img" $c rand-cold "$rep" "$(ubbench rand --cold "$(dir "$img" $c)/$big" "$RANDN")"; done
			done
		fi
		if ! skip rand-warm; then
			ubbench drop
			for c in $CFGS; do ubbench seq "$(dir "$img" $c)/$big" >/dev/null; done
			for rep in $(seq "$REPS"); do
				for c in $CFGS; do rec "$img" $c rand-warm "$rep" "$(ubbench rand "$(dir "$img" $c)/$big" "$((RANDN * 10))")"; done
			done
		fi
	fi

	mark "$img-par"
	# ---- parallel readers: open+read of every file split over 1, 2, 4 threads, warm
	if ! skip par; then
		ubbench drop
		for c in $CFGS; do ubbench readall "$(dir "$img" $c)" >/dev/null; done
		for rep in $(seq "$REPS"); do
			for t in $PAR; do
				for c in $CFGS; do rec "$img" $c "par-$t" "$rep" "$(ubbench par "$(dir "$img" $c)" "$t")"; done
			done
		done
	fi

	grep unionblob_inode /proc/slabinfo | awk -v i="$img" '{print "UBB info img=" i " slab-unionblob_inode-active=" $2 " objsize=" $4}'
	for c in $MCFGS; do do_umount "$img" $c || err "umount $img $c"; done
	ubbench drop
done

mark share
# ---- two images sharing a base (a and b): page cache after reading every file of both.
# unionblob: one store, so shared files are one object and cached once; overlayfs: b's
# lowerdir uses a's base layer directory; ext4: two unpacked copies; erofs: two images.
# Host: fuse / fuse-shared serve both blobs from the one store (private: each mount caches
# its own copy of the pages; shared: passthrough, the store's pages); mergerfs: the two copies.
if ! skip share; then
	for c in $MCFGS; do for i in a b; do mkdir -p "$(dir $i $c)"; done; done
	for rep in $(seq "$REPS"); do
		for c in $CFGS; do
			for i in a b; do [ $c = ext4 ] || do_mount $i $c >/dev/null || err "mount $i $c for share"; done
			ubbench drop
			c0=$(kB Cached)
			ra=$(ubbench readall "$(dir a $c)")
			ca=$(kB Cached)
			rb=$(ubbench readall "$(dir b $c)")
			c1=$(kB Cached)
			ua=${ra##*us=} ub=${rb##*us=}
			rec ab $c share "$rep" "cached-a-kB=$((ca - c0)) cached-kB=$((c1 - c0)) files-a=$(echo "$ra" | sed 's/ .*//; s/files=//') files-b=$(echo "$rb" | sed 's/ .*//; s/files=//') us=$((ua + ub))"
			for i in a b; do [ $c = ext4 ] || do_umount $i $c; done
		done
	done
fi
mark end
end
