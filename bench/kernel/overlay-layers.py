#!/usr/bin/env python3
"""Unpack each layer of an OCI image into its own directory, in overlayfs's format.

    overlay-layers.py OCI_LAYOUT TAG OUTDIR      -> OUTDIR/1 (bottom layer) .. OUTDIR/N

so that `mount -t overlay -o lowerdir=OUTDIR/N:...:OUTDIR/1` shows the image's tree (what
containerd's overlayfs snapshotter keeps on disk). Run as root (owners, devices, trusted.*).

Each layer is extracted by GNU tar (--numeric-owner --xattrs --xattrs-include='*', -p), then:
  - `.wh..wh..opq` in DIR  -> removed; DIR gets trusted.overlay.opaque=y
  - `.wh.NAME`             -> removed; NAME becomes a 0/0 character device (overlay whiteout)
                              (if the layer itself also has a directory NAME, that directory is
                              made opaque instead: deleted below, recreated here)
  - a hardlink whose target is not in this layer (only in a lower one) cannot be a hardlink
    across layer directories: the target is copied from the highest lower layer holding it
    (`cp -a`, content and metadata; it is then a separate inode, as after a copy-up).
The directories touched by these steps get their mtimes back.
"""
import gzip
import json
import os
import stat
import subprocess
import sys
import tarfile


def blob(layout, digest):
    algo, hexd = digest.split(':', 1)
    return os.path.join(layout, 'blobs', algo, hexd)


def layers_of(layout, tag):
    with open(os.path.join(layout, 'index.json')) as f:
        index = json.load(f)
    for m in index['manifests']:
        if m.get('annotations', {}).get('org.opencontainers.image.ref.name') == tag:
            with open(blob(layout, m['digest'])) as f:
                manifest = json.load(f)
            return [(blob(layout, l['digest']), l['mediaType']) for l in manifest['layers']]
    sys.exit(f'overlay-layers: no tag {tag} in {layout}')


def open_stream(path, media):
    if media.endswith('+zstd'):
        p = subprocess.Popen(['zstd', '-dc', path], stdout=subprocess.PIPE)
        return p.stdout
    if media.endswith('+gzip') or media.endswith('.gzip'):
        return gzip.open(path, 'rb')
    return open(path, 'rb')


def norm(name):
    # tar member names: "./a/b", "a/b/" -> b"a/b"
    n = os.fsencode(name)
    while n.startswith(b'./'):
        n = n[2:]
    return n.strip(b'/')


def foreign_hardlinks(path, media):
    """Hardlink members whose target is not a member before them in this layer."""
    seen, out = set(), []
    with tarfile.open(fileobj=open_stream(path, media), mode='r|') as t:
        for m in t:
            name = norm(m.name)
            if m.islnk() and norm(m.linkname) not in seen:
                out.append((name, norm(m.linkname)))
            seen.add(name)
    return out


class Times:
    """Remember the times of directories before we touch them; put them back at the end."""

    def __init__(self):
        self.saved = {}

    def touch(self, d):
        if d not in self.saved and os.path.isdir(d):
            st = os.lstat(d)
            self.saved[d] = (st.st_atime_ns, st.st_mtime_ns)

    def restore(self):
        # deepest first, so restoring a child does not disturb its parent
        for d in sorted(self.saved, key=len, reverse=True):
            os.utime(d, ns=self.saved[d], follow_symlinks=False)


def main():
    layout, tag, out = sys.argv[1], sys.argv[2], os.fsencode(sys.argv[3])
    layers = layers_of(layout, tag)
    dirs = []
    for i, (path, media) in enumerate(layers, 1):
        dest = os.path.join(out, str(i).encode())
        os.makedirs(dest, exist_ok=True)
        os.chmod(dest, 0o755)
        links = foreign_hardlinks(path, media)
        r = subprocess.run(['tar', '--warning=no-timestamp', '--numeric-owner', '--delay-directory-restore', '--xattrs', '--xattrs-include=*', '-xpf', path,
                            '-C', dest], stderr=subprocess.PIPE)
        errors = [l for l in r.stderr.decode(errors='replace').splitlines()
                  if 'Cannot hard link' not in l and 'Exiting with failure' not in l]
        if r.returncode not in (0, 2) or errors or (r.returncode == 2 and not links):
            sys.exit(f'overlay-layers: tar failed on layer {i}:\n' + r.stderr.decode(errors='replace'))
        times = Times()
        copied = 0
        for name, target in links:
            dst = os.path.join(dest, name)
            if os.path.lexists(dst):
                continue
            src = None
            for lower in reversed(dirs):
                cand = os.path.join(lower, target)
                if os.path.lexists(cand):
                    st = os.lstat(cand)
                    if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
                        src = cand
                    break
            if src is None:
                sys.exit(f'overlay-layers: layer {i}: hardlink {name!r} -> {target!r} found nowhere')
            times.touch(os.path.dirname(dst))
            subprocess.run(['cp', '-a', '--no-dereference', '--', src, dst], check=True)
            copied += 1
        opaque = whiteouts = 0
        for root, dnames, fnames in os.walk(dest):
            for n in fnames:
                if not n.startswith(b'.wh.'):
                    continue
                p = os.path.join(root, n)
                times.touch(root)
                os.unlink(p)
                if n == b'.wh..wh..opq':
                    os.setxattr(root, b'trusted.overlay.opaque', b'y', follow_symlinks=False)
                    opaque += 1
                    continue
                victim = os.path.join(root, n[4:])
                if os.path.isdir(victim) and not os.path.islink(victim):
                    os.setxattr(victim, b'trusted.overlay.opaque', b'y', follow_symlinks=False)
                elif not os.path.lexists(victim):
                    os.mknod(victim, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                whiteouts += 1
        times.restore()
        print(f'layer {i}: {os.path.basename(path)[:12]} whiteouts={whiteouts} opaque={opaque} '
              f'hardlinks-copied-from-lower={copied}', file=sys.stderr)
        dirs.append(dest)


if __name__ == '__main__':
    main()
