# Shared by the bench guests' /init scripts (bench/kernel/guest-bench.sh, bench/scale/guest.sh),
# copied into their initramfs as /lib/guest-lib.sh and sourced first thing (only shell
# builtins run before boot_guest). The caller sets TAG (the prefix of its console lines).

# busybox's applets, /proc, /sys, /dev and a tmpfs /tmp.
boot_guest() {
	/bin/busybox --install -s /bin
	export PATH=/bin
	echo
	mount -t proc proc /proc
	mount -t sysfs sys /sys
	mount -t devtmpfs dev /dev
	mkdir -p /tmp && mount -t tmpfs tmp /tmp
}

err() { echo "$TAG error $*"; }

# The end of a run: kernel warnings and our module's messages, the end line, power off.
end() {
	dmesg | grep -E 'BUG|Oops|WARNING|general protection|Call Trace|unionblob' |
		grep -vE 'taints kernel|module verification failed' | head -20 | sed "s/^/$TAG dmesg /"
	echo "$TAG end"
	poweroff -f
}

# The initramfs' modules in dependency order, then unionblob.ko (no point going on without it).
load_modules() {
	for m in $(cat /modules/order); do
		insmod "/modules/$m" 2>/tmp/insmod.err || err "insmod $m: $(cat /tmp/insmod.err)"
	done
	insmod /modules/unionblob.ko || { err "insmod unionblob.ko"; end; }
}

# wait_nvme N: until N NVMe disks are there (at most 20 s).
wait_nvme() {
	i=0
	while [ "$(ls /sys/block | grep -c nvme)" -lt "$1" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
}
