# Shared pieces of the qemu harnesses (sourced, not run): test/kernel/run.sh (the module
# tests) and bench/kernel/run.sh (the benchmark).
#
# The caller sets REPO (the repository), CACHE (${UB_CACHE}), WORK (its work dir) and a
# log() function before sourcing. Functions:
#   kt_build_module REL                     -> prints the path of unionblob.ko built for REL
#   kt_begin_flavour FLAVOUR                -> prints UBKERNEL, sets KT_REL and KT_KO; on a
#                                              failed build prints the UBTEST fail, returns 1
#   kt_make_initramfs REL KO OUT INIT "MODULES" [FILE:GUESTPATH...]
#   kt_qemu REL INITRD CONSOLE TIMEOUT APPEND MEM_MB [QEMU ARGS...]   -> qemu's status
#   kt_guest_result CONSOLE QEMU_RC PATTERN -> prints the guest's PATTERN lines; 1 if it failed

# Index NAME -> path of every module of a kernel, '-' and '_' alike.
declare -A MODPATH
kt_index_modules() {
	MODPATH=()
	local f n
	while IFS= read -r f; do
		n=$(basename "$f")
		n=${n%.xz}
		n=${n%.ko}
		MODPATH[${n//-/_}]=$f
	done < <(find "$1/kernel" -name '*.ko' -o -name '*.ko.xz')
}

kt_module_depends() {
	local f=${MODPATH[$1]}
	if [[ $f == *.xz ]]; then xz -dc "$f" | strings -a; else strings -a "$f"; fi |
		sed -n 's/^depends=//p' | head -n1 | tr ',' ' '
}

# Emit NAME's dependencies then NAME (post-order), once each, into ORDER.
declare -A SEEN
kt_visit() {
	local m=${1//-/_} d
	[ -n "${SEEN[$m]:-}" ] && return
	SEEN[$m]=1
	[ -n "${MODPATH[$m]:-}" ] || { log "module $m not found (built in?)"; return; }
	for d in $(kt_module_depends "$m"); do kt_visit "$d"; done
	ORDER+=("$m")
}

# kt_make_initramfs REL KO OUT INIT "MODULES" [FILE:GUESTPATH...]
# busybox-static as /bin/busybox, INIT as /init, the MODULES of kernel REL with their
# dependencies (read from .modinfo) in load order in /modules/order, KO as
# /modules/unionblob.ko, and each extra FILE at GUESTPATH (mode kept).
kt_make_initramfs() {
	local rel=$1 ko=$2 out=$3 init=$4 mods=$5 root m x
	shift 5
	root=$(mktemp -d "$WORK/initrd.XXXXXX")
	chmod 755 "$root"   # the guest's /: other users run the helpers too
	mkdir -p "$root/bin" "$root/modules" "$root/proc" "$root/sys" "$root/dev"
	cp /bin/busybox "$root/bin/busybox"
	cp "$init" "$root/init"
	chmod +x "$root/init"
	for x in "$@"; do
		mkdir -p "$root/$(dirname "${x#*:}")"
		cp -p "${x%%:*}" "$root/${x#*:}"
	done
	kt_index_modules "$CACHE/kernels/$rel/modules"
	SEEN=()
	ORDER=()
	for m in $mods; do kt_visit "$m"; done
	for m in "${ORDER[@]}"; do
		local f=${MODPATH[$m]}
		if [[ $f == *.xz ]]; then xz -dc "$f" >"$root/modules/$m.ko"; else cp "$f" "$root/modules/$m.ko"; fi
		echo "$m.ko" >>"$root/modules/order"
	done
	cp "$ko" "$root/modules/unionblob.ko"
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
	rm -rf "$root"
}

# The module as dkms would build it: `make -C kmod dist`, then an M= build of that tree.
kt_build_module() {
	local rel=$1 src=$WORK/$1/src kdir
	kdir=$(cat "$CACHE/kernels/$rel/kdir")
	mkdir -p "$WORK/$rel"
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

# kt_begin_flavour FLAVOUR: the start of each kernel's run in the harnesses (UBKERNEL line,
# its work dir, the module built for it).
kt_begin_flavour() {
	KT_REL=$(cat "$CACHE/kernels/$1.release")
	echo "UBKERNEL $1 $KT_REL"
	mkdir -p "$WORK/$KT_REL"
	log "$1 ($KT_REL): building the module"
	KT_KO=$(kt_build_module "$KT_REL") && return 0
	echo "UBTEST fail build module build failed"
	return 1
}

# kt_qemu REL INITRD CONSOLE TIMEOUT APPEND MEM_MB [QEMU ARGS...]: boot kernel REL under
# TCG (2 vCPUs, serial console to CONSOLE), wait at most TIMEOUT s; returns qemu's status.
kt_qemu() {
	local rel=$1 initrd=$2 console=$3 timeout=$4 append=$5 mem=$6 rc
	shift 6
	kt_qemu_once "$rel" "$initrd" "$console" "$timeout" "$append" "$mem" "$@"
	rc=$?
	# A kernel that dies before our init printed a line never ran our module: under TCG with
	# thread=multi an early-boot oops (text patching: "Oops: int3" in sched_clock_cpu, seen once
	# in 6.12's sched_init_debug) happens now and then. Boot once more; the first console is kept.
	if grep -aqE 'Kernel panic|Oops:' "$console" && ! grep -aqE '^UB[A-Z]+ ' "$console"; then
		mv "$console" "$console.crashed-boot"
		echo "kt_qemu: the kernel crashed before the guest's init printed a line (emulator flake?): booting once more ($console.crashed-boot)" >&2
		kt_qemu_once "$rel" "$initrd" "$console" "$timeout" "$append" "$mem" "$@"
		rc=$?
	fi
	return $rc
}

kt_qemu_once() {
	local rel=$1 initrd=$2 console=$3 timeout=$4 append=$5 mem=$6
	shift 6
	timeout --foreground -k 10 "$timeout" qemu-system-x86_64 \
		-accel tcg,thread=multi -cpu max -m "$mem" -smp 2 \
		-kernel "$CACHE/kernels/$rel/vmlinuz" -initrd "$initrd" \
		-append "$append" "$@" \
		-nographic -no-reboot -monitor none </dev/null >"$console" 2>&1
}

# kt_guest_result CONSOLE QEMU_RC PATTERN: the guest's result lines (those matching ^(PATTERN))
# from its console log; returns 1 when a check failed or the guest did not reach its end.
kt_guest_result() {
	local console=$1 rc=$2 failed=0
	tr -d '\r' <"$console" | grep -aE "^($3)" || true
	if ! grep -aq '^UBTEST end' "$console"; then
		echo "UBTEST fail guest-finished guest did not finish (qemu rc $rc); tail of the console:"
		tail -n 40 "$console" | tr -d '\r' | sed 's/^/UBDIAG guest-finished /'
		failed=1
	fi
	grep -aq '^UBTEST fail' "$console" && failed=1
	return $failed
}
