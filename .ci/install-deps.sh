#!/usr/bin/env bash
# Installs the Debian (bookworm) packages the tests need. Idempotent and quick when everything
# is there: no `apt-get update` unless a package is missing. Used by test/run.sh; safe to run
# by hand. Needs root when something is missing. Runs unattended (no stdin, no prompts).
set -euo pipefail

PKGS=(
  # real-image fixtures (test/fixtures/make-images.sh) and the differential tests
  debootstrap umoci skopeo attr acl libcap2-bin fsverity zstd xz-utils cpio python3
  # FUSE server, overlay and mount tests
  fuse3 libfuse3-dev mergerfs fuse-overlayfs erofs-utils pkg-config make gcc g++ e2fsprogs
  # reflinked stores (cfs build --rootfs clones files on XFS)
  xfsprogs
  # kernel module build and the qemu harness
  qemu-system-x86 busybox-static pahole clang libclang-rt-14-dev
  # containerd snapshotter (issue #5): containerd 1.6, runc, and containerd's API protos
  containerd runc golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev
  # pulls from a real registry (the distribution registry), over TLS with a test CA
  docker-registry openssl
  # build benchmark (bench/build): peak RSS of a child via /usr/bin/time
  time
  # layer decompression off the main thread (the addon: gunzip.cc with ISA-L, unzstd.cc with libzstd)
  libisal-dev libzstd-dev
)

installed() {
  dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null | grep -qx installed
}

missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PKGS[@]} packages present" >&2
  exit 0
fi

if [[ $(id -u) != 0 ]]; then
  echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
echo "install-deps: installing ${missing[*]}" >&2
for try in 1 2 3; do
  if apt-get update -q </dev/null >&2 && apt-get install "${apt_opts[@]}" "${missing[@]}" </dev/null >&2; then
    break
  fi
  ((try < 3)) || { echo "install-deps: apt-get failed" >&2; exit 1; }
  sleep $((try * 5))
done

still=()
for p in "${missing[@]}"; do installed "$p" || still+=("$p"); done
if ((${#still[@]})); then
  echo "install-deps: still missing after apt-get: ${still[*]}" >&2
  exit 1
fi
echo "install-deps: done" >&2
