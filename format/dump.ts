// The stable text dump of SPEC §9. The C reader (format/c/ubdump) prints the same bytes, so
// every choice here is spelled out in the SPEC: st_ino (index + 1), lowercase hex everywhere,
// one '\n'-terminated line per walk entry (the root first), escapes applied to paths, symlink
// targets and xattr names.

import { BlobReader } from './decode.js';
import { Layout, SectionId } from './layout.js';

const PLAIN = /^[\x21-\x5b\x5d-\x7e]*$/;

/** Bytes outside 0x21..0x7e and '\' become \xHH (lowercase hex); the rest stay as they are. */
export function escapeBytes(s: string): string {
  if (PLAIN.test(s)) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out += c < 0x21 || c > 0x7e || c === 0x5c ? '\\x' + c.toString(16).padStart(2, '0') : s[i];
  }
  return out;
}

/** The SPEC §9 dump of the whole blob. Throws BlobError on corruption (walk checks included). */
export function dumpBlob(reader: BlobReader): string {
  const h = reader.header;
  const lines: string[] = [
    `# unionblob v${h.versionMajor} inodes=${h.inodeCount} dirents=${h.direntCount}` +
      ` digests=${h.sections[SectionId.DIGESTS].count} xattrsets=${h.sections[SectionId.XATTR_INDEX].count}`,
  ];
  for (const { path, ino, inode } of reader.walk()) {
    let payload = '-';
    switch (inode.type) {
      case 'reg':
        if (inode.layout === Layout.INLINE) payload = 'inline:' + reader.readInline(ino).toString('hex');
        else if (inode.layout === Layout.EXTERNAL) payload = 'obj:' + reader.digest(inode.payload).toString('hex');
        break;
      case 'dir':
        // Bytes of directory data in DIRS (SPEC §5), which is the directory's st_size.
        payload = `dir:${inode.size}`;
        break;
      case 'lnk':
        payload = 'link:' + escapeBytes(reader.readlink(ino));
        break;
      case 'chr':
      case 'blk':
        payload = `dev:${inode.rdevMajor},${inode.rdevMinor}`;
        break;
    }
    let xattrs = '-';
    const map = reader.xattrs(ino);
    if (map.size > 0) {
      // The reader returns the set in stored order, which it checked is byte order.
      xattrs = [...map].map(([name, value]) => `${escapeBytes(name)}=${value.toString('hex')}`).join(',');
    }
    const perm = (inode.mode & 0o7777).toString(8).padStart(4, '0');
    const nsec = String(inode.mtimeNsec).padStart(9, '0');
    lines.push(
      `${escapeBytes(path)} ${ino + 1} ${inode.type} ${perm} ${inode.uid} ${inode.gid} ${inode.nlink} ${inode.size}` +
        ` ${inode.mtimeSec}.${nsec} ${payload} ${xattrs}`,
    );
  }
  return lines.join('\n') + '\n';
}
