// Blobs that are well formed except for one rule a reader must enforce itself (its header and
// section CRCs are valid, so a CRC check does not stand in for the rule). Shared by the C
// reader's tests (ubdump, TypeScript reader) and the kernel guest (test/kernel/make-fixtures.mjs).
// Each is built with the encoder and then patched where SPEC §4, §5, §8 say a reader refuses it.
import * as F from '../../dist/format/index.js';

const node = (mode, extra = {}) => ({ mode, uid: 0, gid: 0, mtimeSec: 1_700_000_000, mtimeNsec: 0, xattrs: new Map(), size: 0, ...extra });
const dir = (entries) => node(F.S_IFDIR | 0o755, { children: new Map(entries) });
const inline = (text, extra = {}) => node(F.S_IFREG | 0o644, { size: text.length, inline: Buffer.from(text, 'latin1'), ...extra });
const external = (size, fill) => node(F.S_IFREG | 0o644, { size, digest: Buffer.alloc(32, fill) });
const symlink = (target) => node(F.S_IFLNK | 0o777, { size: target.length, target });

const sectionAt = (id) => F.SECTION_TABLE_OFFSET + id * F.SECTION_ENTRY_SIZE;

/** Recompute every section's CRC and the header CRC, as the encoder would. */
export function reseal(blob) {
  for (let id = 0; id < F.SECTION_COUNT; id++) {
    const off = Number(blob.readBigUInt64LE(sectionAt(id) + F.SEC.offset));
    const size = Number(blob.readBigUInt64LE(sectionAt(id) + F.SEC.size));
    blob.writeUInt32LE(F.crc32c(blob.subarray(off, off + size)), sectionAt(id) + F.SEC.crc);
  }
  blob.writeUInt32LE(0, F.HDR.headerCrc);
  blob.writeUInt32LE(F.crc32c(blob.subarray(0, F.HEADER_SIZE)), F.HDR.headerCrc);
  return blob;
}

/** Blob offset of inode `i`'s record. */
function inodeAt(reader, i) {
  return reader.header.sections[F.SectionId.INODES].offset + Math.floor(i / F.INODES_PER_PAGE) * 4096 + (i % F.INODES_PER_PAGE) * F.INODE_SIZE;
}

function replaceOnce(blob, from, to) {
  const at = blob.indexOf(Buffer.from(from, 'latin1'));
  if (at < 0 || blob.indexOf(Buffer.from(from, 'latin1'), at + 1) >= 0) throw new Error(`crafted blob: "${from}" not found exactly once`);
  blob.write(to, at, 'latin1');
}

/**
 * name -> { blob, control, path, why }: `path` is the entry whose use must fail (stat, readlink,
 * listxattr or readdir, as `why` says); every other entry of the blob reads normally. `control`
 * is the same blob before the patch (a reader must accept it: the patch is what it refuses).
 */
export function craftedBlobs() {
  const out = {};

  // SPEC §4: a regular file's size is at most 2^63 - 1 (st_size is signed).
  {
    const blob = F.encodeBlob(dir([['big', external(100, 0x11)], ['ok', inline('fine\n')]]));
    const control = Buffer.from(blob);
    const r = F.openBlob(F.sourceFromBuffer(blob));
    const ino = r.lookup(r.header.rootIno, 'big');
    blob.writeBigUInt64LE(0x8000000000000000n, inodeAt(r, ino) + F.INO.size);
    out['size-over-2p63'] = { blob: reseal(blob), control, path: 'big', why: 'stat' };
  }

  // SPEC §4: a symlink target holds no NUL.
  {
    const blob = F.encodeBlob(dir([['link', symlink('a-Z-target')], ['ok', inline('fine\n')]]));
    const control = Buffer.from(blob);
    replaceOnce(blob, 'a-Z-target', 'a\0Z-target');
    out['symlink-nul'] = { blob: reseal(blob), control, path: 'link', why: 'readlink' };
  }

  // SPEC §8: a stored trusted.overlay.* name is at most 247 bytes (escaped, it is 8 longer).
  // Encoded under another name of the same length, then renamed in XATTR_DATA.
  {
    const name = 'trusted.overlaz.' + 'q'.repeat(234); // 250 bytes
    const blob = F.encodeBlob(dir([['x', inline('x\n', { xattrs: new Map([[name, Buffer.from('v')]]) })], ['ok', inline('fine\n')]]));
    const control = Buffer.from(blob);
    replaceOnce(blob, 'overlaz.', 'overlay.');
    out['overlay-xattr-name-250'] = { blob: reseal(blob), control, path: 'x', why: 'listxattr' };
  }

  // SPEC §5: names increase strictly across the chunks of a directory too. Chunk 1's first
  // name is made equal to chunk 0's last (names of one length, so nothing else moves).
  {
    const names = Array.from({ length: 300 }, (_, k) => `entry-${String(k).padStart(5, '0')}`);
    const blob = F.encodeBlob(dir([['d', dir(names.map((n) => [n, inline('e\n')]))], ['ok', inline('fine\n')]]));
    const control = Buffer.from(blob);
    const r = F.openBlob(F.sourceFromBuffer(blob));
    const d = r.inode(r.lookup(r.header.rootIno, 'd'));
    const chunk0 = r.header.sections[F.SectionId.DIRS].offset + d.payload;
    const n0 = blob.readUInt16LE(chunk0 + F.DIRENT.nameoff) / F.DIRENT_SIZE;
    const chunk1 = chunk0 + 4096;
    blob.write(names[n0 - 1], chunk1 + blob.readUInt16LE(chunk1 + F.DIRENT.nameoff), 'latin1');
    out['names-repeat-across-chunks'] = { blob: reseal(blob), control, path: 'd', why: 'readdir' };
  }
  return out;
}
