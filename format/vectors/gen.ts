// Golden vectors: blobs and their SPEC §9 dumps that every reader (TypeScript, C, kernel) must
// agree on. `node dist/format/vectors/gen.js [OUTDIR]` (re)writes format/vectors/NAME.ub and
// NAME.dump; the trees are built deterministically, so regenerating gives identical bytes
// (test/format.test.mjs checks that). Changing a tree here changes the contract: say so.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { encodeBlob } from '../encode.js';
import { openBlob, sourceFromBuffer } from '../decode.js';
import { dumpBlob } from '../dump.js';
import { prng } from './prng.js';
import {
  S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK, type TreeNode,
} from '../tree.js';

export interface Vector {
  name: string;
  blob: Buffer;
  dump: string;
}

const T0 = 1_700_000_000; // fixed mtime so nothing depends on the clock

function meta(mode: number, extra: Partial<TreeNode> = {}): TreeNode {
  return { mode, uid: 0, gid: 0, mtimeSec: T0, mtimeNsec: 0, xattrs: new Map(), size: 0, ...extra };
}
function dir(perm = 0o755, children: [string, TreeNode][] = [], extra: Partial<TreeNode> = {}): TreeNode {
  return meta(S_IFDIR | perm, { children: new Map(children), ...extra });
}
function inlineFile(content: string | Buffer, perm = 0o644, extra: Partial<TreeNode> = {}): TreeNode {
  const inline = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
  return meta(S_IFREG | perm, { size: inline.length, inline, ...extra });
}
/** A fake object digest: SHA-256 of a label (the object store is not part of the vectors). */
function fakeDigest(label: string): Buffer {
  return createHash('sha256').update(label).digest();
}
function externalFile(size: number, label: string, perm = 0o644, extra: Partial<TreeNode> = {}): TreeNode {
  return meta(S_IFREG | perm, { size, digest: fakeDigest(label), ...extra });
}
function symlink(target: string, extra: Partial<TreeNode> = {}): TreeNode {
  return meta(S_IFLNK | 0o777, { size: target.length, target, ...extra });
}
function device(type: number, major: number, minor: number, perm = 0o660): TreeNode {
  return meta(type | perm, { rdevMajor: major, rdevMinor: minor });
}
/** UTF-8 text as a binary string (how names and targets are held in the tree). */
function utf8(s: string): string {
  return Buffer.from(s, 'utf8').toString('latin1');
}
function xattrs(entries: [string, Buffer | string][]): Map<string, Buffer> {
  return new Map(entries.map(([k, v]) => [k, typeof v === 'string' ? Buffer.from(v, 'latin1') : v]));
}

export function emptyRootTree(): TreeNode {
  return dir(0o755);
}

export function smallTree(): TreeNode {
  // security.capability v2: cap_net_raw permitted+effective.
  const capNetRaw = Buffer.from('0000000220000000000000000000000000000000', 'hex');
  // system.posix_acl_access: version 2; USER_OBJ rwx, USER 1000 r-x, GROUP_OBJ r-x, MASK r-x, OTHER r-x.
  const acl = Buffer.concat([
    Buffer.from([2, 0, 0, 0]),
    aclEntry(0x01, 7, 0xffffffff),
    aclEntry(0x02, 5, 1000),
    aclEntry(0x04, 5, 0xffffffff),
    aclEntry(0x10, 5, 0xffffffff),
    aclEntry(0x20, 5, 0xffffffff),
  ]);
  const sharedLabel = xattrs([['security.selinux', 'system_u:object_r:bin_t:s0\0']]);

  const sh = externalFile(125_688, 'busybox', 0o755, { xattrs: new Map(sharedLabel) });
  const hostname = inlineFile('unionblob\n');
  const hardlinked = inlineFile('same inode, three names\n', 0o600, { uid: 1000, gid: 1000 });

  const longTarget = 'x/'.repeat(1500) + 'end'; // 3003 bytes: pushes DATA across a page
  const longerTarget = '../'.repeat(1365); // 4095 bytes, the maximum; starts a new page

  return dir(0o755, [
    ['bin', dir(0o755, [
      ['ash', sh],
      ['ping', externalFile(71_000, 'iputils-ping', 0o4755, { xattrs: xattrs([['security.capability', capNetRaw]]) })],
      ['sh', sh],
      ['sudo', externalFile(232_416, 'sudo', 0o4711, { gid: 0 })],
      ['wall', externalFile(35_000, 'wall', 0o2755, { gid: 5 })],
    ], { xattrs: new Map(sharedLabel) })],
    ['dev', dir(0o755, [
      ['big', device(S_IFCHR, 4095, 0xfffff, 0o600)],
      ['loop7', device(S_IFBLK, 7, 7)],
      ['null', device(S_IFCHR, 1, 3, 0o666)],
      ['nvme0n1p300', device(S_IFBLK, 259, 300)],
      ['sda', device(S_IFBLK, 8, 0)],
    ])],
    ['empty', meta(S_IFREG | 0o644)],
    ['empty-dir', dir(0o700)],
    ['etc', dir(0o755, [
      ['exactly64', inlineFile('6'.repeat(64))],
      ['hostname', hostname],
      ['hostname.copy', inlineFile('unionblob\n', 0o640)], // same bytes, separate inode: shares the DATA item
      ['just65', externalFile(65, 'sixty-five bytes')],
      ['link-to-hostname', symlink('hostname')],
      ['os-release', externalFile(386, 'os-release')],
      ['passwd', externalFile(1_024, 'passwd')],
      ['same-as-target', inlineFile('hostname', 0o644)], // equals a symlink target: shared item
    ], { mtimeSec: T0, mtimeNsec: 123_456_789 })],
    ['hl-a', hardlinked],
    ['hl-b', hardlinked],
    ['names', dir(0o755, [
      [utf8('café'), inlineFile('utf-8 name\n')],
      [utf8('日本語'), meta(S_IFREG | 0o644)],
      ['\xff\xfe\x80', meta(S_IFREG | 0o644)], // not UTF-8
      ['a b\\c\x01\x7f', meta(S_IFREG | 0o644)], // space, backslash, control chars
      ['n'.repeat(255), inlineFile('longest name\n')],
      ['=,', meta(S_IFREG | 0o644)],
      ['hl-c', hardlinked],
    ])],
    ['overlay', dir(0o755, [
      ['opaque', dir(0o755, [], { xattrs: xattrs([['trusted.overlay.opaque', 'y']]) })],
      ['whiteout', device(S_IFCHR, 0, 0, 0o000)],
    ])],
    ['run', dir(0o755, [
      ['fifo', meta(S_IFIFO | 0o620, { uid: 100_000, gid: 4_294_967_294 })],
      ['sock', meta(S_IFSOCK | 0o777, { uid: 4_294_967_295, gid: 65_536 })],
    ])],
    ['share', dir(0o2775, [
      ['acl', dir(0o775, [], {
        xattrs: xattrs([['system.posix_acl_access', acl], ['system.posix_acl_default', acl], ['user.comment', 'default ACL']]),
      })],
      ['long-link', symlink(longTarget)],
      ['longer-link', symlink(longerTarget)],
      ['old', inlineFile('before 1970\n', 0o444, { mtimeSec: -1, mtimeNsec: 500_000_000 })],
      ['older', inlineFile('1900\n', 0o444, { mtimeSec: -2_208_988_800, mtimeNsec: 1 })],
      // The ends of the 34-bit seconds range (SPEC §4): 1697 and 2242.
      ['oldest', inlineFile('1697\n', 0o444, { mtimeSec: -(2 ** 33), mtimeNsec: 0 })],
      ['latest', inlineFile('2242\n', 0o444, { mtimeSec: 2 ** 33 - 1, mtimeNsec: 999_999_999 })],
      ['xattr-zoo', inlineFile('xattrs\n', 0o644, {
        xattrs: xattrs([
          ['user.empty', ''],
          ['user.mime_type', 'text/plain'],
          ['trusted.md5', Buffer.from('d41d8cd98f00b204e9800998ecf8427e', 'hex')],
          ['security.ima', Buffer.from([0x03, 0x02, 0x04])],
          ['weird.namespace', 'prefix id 0'],
          ['user.bin\xff', Buffer.from([0, 255, 10, 0x2c, 0x3d])],
        ]),
      })],
    ])],
    ['tmp', dir(0o1777, [], { mtimeSec: 0, mtimeNsec: 999_999_999 })],
  ], { mtimeSec: T0, mtimeNsec: 42 });
}

function aclEntry(tag: number, perm: number, id: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(tag, 0);
  b.writeUInt16LE(perm, 2);
  b.writeUInt32LE(id, 4);
  return b;
}

/** One directory of 3000 entries over several chunks; most entries are hardlinks to a few inodes. */
export function bigdirTree(): TreeNode {
  const rand = prng(0xb16d1);
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-';
  // Cheap to dump (no digests, mtime 0): this vector is about the directory, not the inodes.
  const epoch = { mtimeSec: 0 };
  const shared = [
    inlineFile('shared\n', 0o644, epoch),
    meta(S_IFREG | 0o644, epoch),
    meta(S_IFIFO | 0o644, epoch),
    symlink('target', epoch),
    meta(S_IFSOCK | 0o755, epoch),
  ];
  const children = new Map<string, TreeNode>();
  let i = 0;
  while (children.size < 3000) {
    // Mostly short names, some up to the 255-byte maximum, all distinct via a numeric part.
    const r = rand();
    const len = r < 0.9 ? 1 + Math.floor(rand() * 24) : r < 0.98 ? 25 + Math.floor(rand() * 80) : 200 + Math.floor(rand() * 56);
    let name = '';
    for (let k = 0; k < len; k++) name += alphabet[Math.floor(rand() * alphabet.length)];
    if (name === '.' || name === '..' || children.has(name)) continue;
    const node = i % 50 === 0 ? dir(0o755, [], epoch) : shared[i % shared.length];
    children.set(name, node);
    i++;
  }
  return meta(S_IFDIR | 0o755, { children, ...epoch });
}

/** 100 nested directories below the root with a file at the bottom. */
export function deepTree(): TreeNode {
  let node: TreeNode = inlineFile('bottom\n');
  let name = 'file';
  for (let level = 100; level >= 1; level--) {
    node = dir(0o755, [[name, node]]);
    name = `d${String(level).padStart(3, '0')}`;
  }
  return dir(0o755, [[name, node]]); // root -> d001 -> ... -> d100 -> file
}

/**
 * Directory packing in DIRS (SPEC §5), placed in inode order:
 * - the root (~3.6 KiB of entries) at offset 0;
 * - /a-exact: entries of exactly 4096 bytes (16 * (8 + 248)): one full chunk, so it starts a new page;
 * - /b-over: entries of 4097 bytes (15 * 256 + 257): the first chunk holds 3840 bytes and is padded
 *   to 4096, the second holds the last entry (257 bytes); page-aligned, size 4353;
 * - /c-full: a first chunk filled to exactly 4096 bytes plus a second of 2 entries;
 * - 300 small directories /p000.. of 0..6 entries with 1..60-byte names, packed by first fit: into
 *   the tails of the root's, /b-over's and /c-full's pages while they have room, then into new
 *   pages; many do not fit in what is left of the last page and fill an earlier one or start the next.
 * All files are one hardlinked empty file (the vector is about directories, not inodes).
 */
export function dirpackTree(): TreeNode {
  const rand = prng(0xd1e5);
  const epoch = { mtimeSec: 0 };
  const file = meta(S_IFREG | 0o644, epoch);
  const pad = (i: number, len: number) => String(i).padStart(2, '0') + 'x'.repeat(len - 2);
  const exact: [string, TreeNode][] = [];
  for (let i = 0; i < 16; i++) exact.push([pad(i, 248), file]);
  const over: [string, TreeNode][] = [];
  for (let i = 0; i < 16; i++) over.push([pad(i, i === 15 ? 249 : 248), file]);
  const full: [string, TreeNode][] = [];
  for (let i = 0; i < 18; i++) full.push([pad(i, 248), file]);
  const children: [string, TreeNode][] = [
    ['a-exact', dir(0o755, exact, epoch)],
    ['b-over', dir(0o755, over, epoch)],
    ['c-full', dir(0o755, full, epoch)],
  ];
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  for (let d = 0; d < 300; d++) {
    const entries = new Map<string, TreeNode>();
    const want = Math.floor(rand() * 7);
    while (entries.size < want) {
      const len = 1 + Math.floor(rand() * 60);
      let name = '';
      for (let k = 0; k < len; k++) name += alphabet[Math.floor(rand() * alphabet.length)];
      entries.set(name, file);
    }
    children.push([`p${String(d).padStart(3, '0')}`, dir(0o755, [...entries], epoch)]);
  }
  return dir(0o755, children, epoch);
}

export function generateVectors(): Vector[] {
  const trees: [string, TreeNode][] = [
    ['empty-root', emptyRootTree()],
    ['small', smallTree()],
    ['bigdir', bigdirTree()],
    ['deep', deepTree()],
    ['dirpack', dirpackTree()],
  ];
  return trees.map(([name, tree]) => {
    const blob = encodeBlob(tree);
    return { name, blob, dump: dumpBlob(openBlob(sourceFromBuffer(blob))) };
  });
}

export const VECTORS_DIR = fileURLToPath(new URL('../../../format/vectors/', import.meta.url));

function main(): void {
  const out = process.argv[2] ?? VECTORS_DIR;
  mkdirSync(out, { recursive: true });
  for (const v of generateVectors()) {
    writeFileSync(join(out, `${v.name}.ub`), v.blob);
    writeFileSync(join(out, `${v.name}.dump`), v.dump, 'latin1');
    console.log(`${v.name}: ${v.blob.length} bytes, ${v.dump.split('\n').length - 2} entries`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
