#!/bin/busybox sh
# /init of the scale series' kernel guest (bench/scale/kernel.sh): busybox, ubbench (mount
# timing, drop_caches, disks by serial) and lookup (bench/scale/lookup.c). Prints on the
# serial console:
#   UBS info KEY=VALUE...                                       the setting
#   UBS n=N cfg=C test=T rep=R KEY=VALUE...                     one measurement
#   UBE cfg=C rep=1 END PATH SIZE HEAD|TAIL                     what the sparse files read back
#   UBS error TEXT / UBS end
# Disks (NVMe, found by serial): ubtN = ext4 holding the unpacked tree of the N-file image
# (the native limit), ubbN = ext4 holding image.ub, store/ and paths (the random paths);
# ubsparse = ext4 holding image.ub, store/ (sparse objects), native/big/ (the same objects
# hardlinked: the native side), paths (stat latency) and ends (every file once).
# Kernel command line: ubsizes=N,N... ubreps=R ubsparse=0|1.

TAG=UBS
. /lib/guest-lib.sh   # boot_guest, err, end, load_modules, wait_nvme
boot_guest
mkdir -p /t /b /u /s /us

arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -n 1; }
SIZES=$(arg ubsizes | tr ',' ' ')
REPS=$(arg ubreps); REPS=${REPS:-3}
SPARSE=$(arg ubsparse)
load_modules
wait_nvme $(($(echo $SIZES | wc -w) * 2 + ${SPARSE:-0}))
echo "UBS info kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) mem-kB=$(awk '/^MemTotal/ {print $2}' /proc/meminfo) reps=$REPS"

# rec N CFG TEST REP OUTPUT: one measurement line, or an error when OUTPUT is not one
rec() {
	case "$5" in
	*us=*|*p50_ns=*) echo "UBS n=$1 cfg=$2 test=$3 rep=$4 $5" ;;
	*) err "n=$1 cfg=$2 test=$3 rep=$4: $5" ;;
	esac
}

# ---- the N-file images: mount(2) after drop_caches, then lookups of the same random paths,
# cold (after drop_caches) and warm, ext4 first then unionblob in every round (as on the host)
for n in $SIZES; do
	T=$(ubbench serial-dev "ubt$n") B=$(ubbench serial-dev "ubb$n")
	mount -t ext4 -o ro "$B" /b || { err "n=$n: cannot mount the blob disk $B"; continue; }
	for rep in $(seq "$REPS"); do
		rec "$n" ext4 mount "$rep" "$(ubbench mount --cold ext4 "$T" /t 2>&1)"
		rec "$n" unionblob mount "$rep" "$(ubbench mount --cold unionblob "s$n" /u "descriptor=/b/image.ub,basedir=/b/store" 2>&1)"
		for c in ext4 unionblob; do
			d=/t
			[ $c = unionblob ] && d=/u
			rec "$n" $c lookup-cold "$rep" "$(lookup --cold "$d" /b/paths 2>&1)"
			rec "$n" $c lookup-warm "$rep" "$(lookup "$d" /b/paths 2>&1)"
		done
		umount /u || err "n=$n: umount unionblob"
		umount /t || err "n=$n: umount ext4"
	done
	grep unionblob_inode /proc/slabinfo | awk -v n="$n" '{print "UBS info n=" n " slab-unionblob_inode-active=" $2 " objsize=" $4}'
	umount /b
done

# ---- the sparse objects: stat + open + head + last block of every file, cold; then warm
# stat latency; ext4 = the objects through their hardlinks in big/
if [ "$SPARSE" = 1 ]; then
	S=$(ubbench serial-dev ubsparse)
	mount -t ext4 -o ro "$S" /s || { err "cannot mount the sparse disk $S"; end; }
	mkdir -p /us
	for rep in $(seq "$REPS"); do
		rec sparse unionblob mount "$rep" "$(ubbench mount --cold unionblob sparse /us "descriptor=/s/image.ub,basedir=/s/store" 2>&1)"
		for c in ext4 unionblob; do
			d=/s/native
			[ $c = unionblob ] && d=/us
			lookup --cold --ends "$d" /s/ends >/tmp/ends 2>&1
			[ "$rep" = 1 ] && sed -n "s/^END /UBE cfg=$c rep=1 END /p" /tmp/ends
			rec sparse $c ends-cold "$rep" "$(tail -n 1 /tmp/ends)"
			rec sparse $c lookup-warm "$rep" "$(lookup "$d" /s/paths 2>&1)"
		done
		umount /us || err "umount sparse unionblob"
	done
	umount /s
fi
end
