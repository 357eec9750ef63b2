#!/usr/bin/env bash
# npm's `install` script (npm ci in a checkout, npm install -g of a packed unionblob): build the
# native parts. Best effort, so that an install on a machine without a compiler still gives a
# working `cfs`: each part that does not build gets one line saying what it costs and how to see why.
cd "$(dirname "$0")/.." || exit 0
if ! npm run -s build:addon >/dev/null 2>&1; then
  echo 'unionblob: the Node addon (mounter/addon) did not build; cfs runs without it, slower and without the kernel mount backend: npm run build:addon says why' >&2
fi
if [ -f mounter/addon/build/Release/unionblob.node ] && { [ ! -f /usr/include/isa-l/igzip_lib.h ] || [ ! -f /usr/include/zstd.h ]; }; then
  echo 'unionblob: the Node addon was built without ISA-L or libzstd (libisal-dev, libzstd-dev): gzip or zstd layers decompress in JavaScript, slower; install them, then npm run build:addon' >&2
fi
if ! make -s -C mounter/fuse unionblob-fuse >/dev/null 2>&1; then
  echo 'unionblob: the FUSE server (mounter/fuse) did not build (it needs gcc, make, pkg-config and libfuse3-dev); cfs mount needs it where the kernel module is not loaded: npm run build:fuse says why' >&2
fi
exit 0
