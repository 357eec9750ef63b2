# The host's side of bench/kernel/guest-bench.sh: sourced by it when bench/host/run.sh runs it
# on the host (UBB_HOST_LIB). run.sh has attached the disks to loop devices, mounted the data
# disk read-only at $UBB_D and passes everything else in the environment:
#   UBB_D, UBB_M           the data disk's mount point, where the configs are mounted
#   UBB_DATA               the data disk's loop device; UBB_EROFS_a/s/b the erofs images'
#   UBB_CFGS               the configs, e.g. "ext4 erofs overlay fuse fuse-shared mergerfs"
#   UBB_FUSE               the unionblob-fuse binary
#   ubreps ubimages ubskip ubpar ubrand   the settings guest-bench.sh reads with arg
# FUSE configs: fuse = unionblob-fuse with its default options, fuse-shared = the same with
# cache=shared (kernel passthrough), both over the blob and store on the data disk; mergerfs =
# mergerfs over the unpacked tree with its defaults (-o ro only, bench/mount's
# mergerfs-default view).

D=$UBB_D M=$UBB_M DATA=$UBB_DATA
EROFS_a=$UBB_EROFS_a EROFS_s=$UBB_EROFS_s EROFS_b=$UBB_EROFS_b
CFGS=$UBB_CFGS

arg() { eval "printf '%s' \"\${$1:-}\""; }
err() { echo "$TAG error $*"; }
end() {
	echo "$TAG end"
	exit 0
}

info "where=host fuse=$UBB_FUSE mergerfs=$(mergerfs -V 2>/dev/null | sed -n '1s/.*version: *//p') data=$DATA erofs-a=$EROFS_a erofs-s=$EROFS_s"

# fuse_server IMG CFG DIR: the command that starts the config's server on DIR
fuse_server() {
	case $2 in
	fuse) echo "$UBB_FUSE $D/u/$1.ub $3 -o basedir=$D/u/store-$(store "$1")" ;;
	fuse-shared) echo "$UBB_FUSE $D/u/$1.ub $3 -o basedir=$D/u/store-$(store "$1"),cache=shared" ;;
	mergerfs) echo "mergerfs -o ro $D/t/$1 $3" ;;
	esac
}

# platform_mount IMG CFG [--cold]: the server started and timed until its mount answers
platform_mount() {
	at=$(dir "$1" "$2")
	cmd=$(fuse_server "$1" "$2" "$at")
	[ -n "$cmd" ] || { echo "ERR no config $2"; return 1; }
	ubbench spawn-mount $3 "$at" $cmd
}

# server_pid DIR: the process whose command line names DIR (the server of that mount). One
# pgrep, not a shell loop over /proc: that forked a `tr` per process, about a second per call,
# and a run calls this for every unmount.
server_pid() {
	pgrep -f -- " $1( |\$)" | head -n 1
}

# server_gone PID: the process has exited. A zombie counts: this machine's pid 1 (not systemd)
# reaps orphans only every ~2 s, and waiting for that cost 2 s per unmount, most of a run.
server_gone() {
	local _p _c st
	read -r _p _c st _ <"/proc/$1/stat" 2>/dev/null || return 0
	[ "$st" = Z ]
}

# platform_umount IMG CFG: unmount, then wait for the server to exit (it does once its mount
# is gone), so that the next measurement does not overlap with its exit
platform_umount() {
	at=$(dir "$1" "$2")
	pid=$(server_pid "$at")
	umount "$at" || return 1
	i=0
	while [ -n "$pid" ] && ! server_gone "$pid" && [ $i -lt 200 ]; do
		sleep 0.05
		i=$((i + 1))
	done
}

# mem_extra IMG CFG: the resident kB of the config's server process
mem_extra() {
	case $2 in
	fuse|fuse-shared|mergerfs)
		pid=$(server_pid "$(dir "$1" "$2")")
		[ -n "$pid" ] && awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"
		;;
	esac
}
