#!/bin/busybox sh
# /init of the userspace guest (test/kernel/userspace.sh): loads the storage modules, mounts the
# system disk (label ubsys: bookworm + node) and the work disk (label ubwork: the checkout at
# main/, the host-built blob at kb/, scratch at t/; ext4 with verity) at /work in it, and runs
# test/kernel/userspace-guest.mjs with the system disk as the root of the mount namespace (moved
# onto /, as switch_root does: in a chroot the kernel refuses new user namespaces, which
# `cfs mount --uidmap` needs). Prints UBTEST/UBDIAG lines on the console,
# then the dmesg scan and `UBTEST end`. unionblob.ko is loaded by the guest script itself.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "UBTEST begin $(uname -r)"

R=/newroot
# The work disk. Once the system disk is moved onto /, this shell (whose root stays the
# initramfs's: absolute paths still lead there) reaches it through its working directory.
W=$R/work
finish() {
	dmesg >/tmp-dmesg.txt
	cp /tmp-dmesg.txt $W/dmesg.txt 2>/dev/null
	if grep -E 'BUG|Oops|WARNING|KASAN|general protection|Call Trace|refcount_t|list_del corruption' /tmp-dmesg.txt >/tmp-bad.txt; then
		echo "UBTEST fail dmesg-clean kernel complained"
		head -n 60 /tmp-bad.txt | sed 's/^/UBDIAG dmesg-clean /'
	else
		echo "UBTEST ok dmesg-clean"
	fi
	echo "UBTEST end"
	sync
	umount $W 2>/dev/null
	poweroff -f
}

for m in $(cat /modules/order); do
	insmod "/modules/$m" || echo "UBDIAG modules insmod $m failed"
done
i=0
while ! { [ -b /dev/nvme0n1 ] && [ -b /dev/nvme1n1 ]; } && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p $R
sys=$(findfs LABEL=ubsys)
work=$(findfs LABEL=ubwork)
if ! mount -t ext4 "$sys" $R || ! mount -t ext4 "$work" $R/work; then
	echo "UBTEST fail disks cannot mount the system ($sys) and work ($work) disks"
	dmesg | tail -20 | sed 's/^/UBDIAG disks /'
	finish
fi
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mount -t tmpfs tmp $R/tmp
mount -t tmpfs run $R/run
cd $R
if mount --move . /; then
	W=./work
else
	echo "UBDIAG guest-script cannot move the system disk onto /: running it chrooted"
fi
chroot . /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/root LANG=C.UTF-8 /usr/bin/node /work/main/test/kernel/userspace-guest.mjs </dev/null 2>&1 ||
	echo "UBTEST fail guest-script exited with status $?"
finish
