// What is mounted where, from /proc/self/mountinfo. Unmount paths use this instead of stat():
// stat() on the mountpoint of a dead or stopped FUSE server fails or hangs, mountinfo never does.
import { readFileSync } from 'node:fs';

export interface MountEntry {
  id: number;
  parentId: number;
  /** "major:minor" of the mounted filesystem; for FUSE the minor is the connection number. */
  device: string;
  mountPoint: string;
  fsType: string;
  source: string;
  /** Per-mount options (ro, nosuid, ...). */
  mountOptions: string;
  /** Filesystem options (lowerdir=..., basedir=..., user_id=...). */
  superOptions: string;
}

/** mountinfo writes space, tab, newline and backslash as \ooo octal escapes. */
export function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    entries.push({
      id: Number(left[0]),
      parentId: Number(left[1]),
      device: left[2],
      mountPoint: unescapeMountinfo(left[4]),
      mountOptions: left[5],
      fsType: right[0],
      source: unescapeMountinfo(right[1] ?? ''),
      superOptions: right[2] ?? '',
    });
  }
  return entries;
}

export function readMountinfo(): MountEntry[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** Every mount at exactly this path, bottom first (the last one is what the path shows). */
export function mountsAt(path: string, entries = readMountinfo()): MountEntry[] {
  return entries.filter((e) => e.mountPoint === path);
}

export function isMountPoint(path: string, entries = readMountinfo()): boolean {
  return mountsAt(path, entries).length > 0;
}

/** Mount points at or below `dir` (for checking that nothing stray is left). */
export function mountsUnder(dir: string, entries = readMountinfo()): MountEntry[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  return entries.filter((e) => e.mountPoint === dir || e.mountPoint.startsWith(prefix));
}

/** Our filesystems: the FUSE server's and the kernel module's. */
export function isUnionblobType(fsType: string): boolean {
  return fsType === 'fuse.unionblob' || fsType === 'unionblob';
}
