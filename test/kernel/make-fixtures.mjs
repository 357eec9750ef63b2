#!/usr/bin/env node
// Host side of the kernel tests: writes the tree that becomes the guest's ext4 "store disk".
//
//   node test/kernel/make-fixtures.mjs OUTDIR        (needs dist/: npx tsc -p tsconfig.json)
//
// OUTDIR/disk/
//   blobs/*.ub            golden vectors (format/vectors) and the test blobs built here
//   blobs/corrupt/*.ub    damaged copies of c.ub (flips, truncations, forged headers)
//   store/ store2/        object stores with real fs-verity names
//   vstore/               objects for the vectors (their digests are fake: content made up,
//                         right size; only usable with verity=off)
//   verstore/             objects for the verity= tests (one tampered)
//   evil/ evil2/          stores with planted symlinks
//   outside/secret        what the symlinks point at
//   expect/NAME.walk      what `ubt walk` must print for a mount of blobs/NAME.ub
//   blobs/img-TAG.ub, imgstore/   `cfs build` of the Debian fixture images (if UB_IMAGES_JSON
//                         names test/fixtures/make-images.sh's images.json); OUTDIR/images.json
//                         lists them with their umoci reference trees
//   out/                  where the guest writes its manifests
//   env.sh                names and digests the guest script needs
// Everything is deterministic (seeded PRNG), so the disk is the same on every run.

import { mkdirSync, writeFileSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { prng } from '../lib/prng.mjs';
import { craftedBlobs } from '../lib/crafted-blobs.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const F = await import(join(repo, 'dist', 'format', 'index.js'));
const { S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK } = F;

const out = process.argv[2];
if (!out) {
  console.error('usage: make-fixtures.mjs OUTDIR');
  process.exit(2);
}
const disk = join(out, 'disk');
rmSync(out, { recursive: true, force: true });
for (const d of ['blobs/corrupt', 'expect', 'outside', 'out']) mkdirSync(join(disk, d), { recursive: true });

// ---- helpers ------------------------------------------------------------

const sha256 = (b) => createHash('sha256').update(b).digest('hex');
const T0 = 1_700_000_000;

const rand = prng(0x5eed);
const randInt = (n) => Math.floor(rand() * n);

/** Deterministic bytes: a SHA-256 counter stream keyed by label. */
function bytes(label, size) {
  const buf = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; i++) {
    off += createHash('sha256').update(`${label}:${i}`).digest().copy(buf, off);
  }
  return buf;
}

/** digest hex -> sha256 of the content a reader gets for it. */
const contentSha = new Map();

function putObject(store, content, digest = F.verityDigest(content)) {
  const hex = digest.toString('hex');
  const path = join(disk, store, 'objects', hex.slice(0, 2), hex.slice(2));
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  contentSha.set(hex, sha256(content));
  return digest;
}

const meta = (mode, extra = {}) => ({ mode, uid: 0, gid: 0, mtimeSec: T0, mtimeNsec: 0, xattrs: new Map(), size: 0, ...extra });
const dir = (perm, children = [], extra = {}) => meta(S_IFDIR | perm, { children: new Map(children), ...extra });
const inline = (content, perm = 0o644, extra = {}) => {
  const b = Buffer.from(content);
  return meta(S_IFREG | perm, { size: b.length, inline: b, ...extra });
};
const external = (store, content, perm = 0o644, extra = {}) =>
  meta(S_IFREG | perm, { size: content.length, digest: putObject(store, content), ...extra });
const symlink = (target) => meta(S_IFLNK | 0o777, { size: target.length, target });
const device = (type, major, minor, perm = 0o660) => meta(type | perm, { rdevMajor: major, rdevMinor: minor });
const xattrs = (entries) => new Map(entries.map(([k, v]) => [k, Buffer.isBuffer(v) ? v : Buffer.from(v, 'latin1')]));

function aclValue(entries) {
  const parts = [Buffer.from([2, 0, 0, 0])];
  for (const [tag, perm, id] of entries) {
    const b = Buffer.alloc(8);
    b.writeUInt16LE(tag, 0);
    b.writeUInt16LE(perm, 2);
    b.writeUInt32LE(id >>> 0, 4);
    parts.push(b);
  }
  return Buffer.concat(parts);
}

// ---- expected walk ------------------------------------------------------

function unescape(s) {
  return Buffer.from(s.replace(/\\x([0-9a-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))), 'latin1');
}
const escape = (buf) => F.escapeBytes(buf.toString('latin1'));

// Namespaces the kernel can show; others (e.g. a prefix-0 "weird.x") it cannot serve.
const SHOWN_XATTR = /^(user\.|trusted\.|security\.|system\.posix_acl_(access|default)$)/;

/**
 * What listxattr shows of a dump's xattr field on an inode of `type` (dump type name): the
 * VFS lets nobody read user.* on what is not a regular file or directory, nor ACLs of a
 * symlink, so the module does not list them (overlayfs's copy-up stops at a name it cannot read).
 */
function expectedXattrs(field, type) {
  if (field === '-') return '-';
  // Split on ',' but keep commas that belong to a name (segments without '=').
  const pairs = [];
  for (const seg of field.split(',')) {
    if (pairs.length && !seg.includes('=')) pairs[pairs.length - 1] += ',' + seg;
    else pairs.push(seg);
  }
  const items = [];
  for (const p of pairs) {
    const eq = p.lastIndexOf('=');
    let name = unescape(p.slice(0, eq));
    const value = p.slice(eq + 1);
    const n = name.toString('latin1');
    if (!SHOWN_XATTR.test(n)) continue;
    if (n.startsWith('user.') && type !== 'reg' && type !== 'dir') continue;
    if (n.startsWith('system.posix_acl_') && type === 'lnk') continue;
    // SPEC §8: an image's trusted.overlay.X is shown as trusted.overlay.overlay.X
    if (n.startsWith('trusted.overlay.')) name = Buffer.from('trusted.overlay.overlay.' + n.slice(16), 'latin1');
    items.push([name, value]);
  }
  items.sort((a, b) => Buffer.compare(a[0], b[0]));
  return items.length ? items.map(([n, v]) => `${escape(n)}=${v}`).join(',') : '-';
}

// Linux cannot represent uid/gid 0xffffffff: stat shows the overflow id.
const statId = (id) => (id === '4294967295' ? '65534' : id);

/** SPEC §9 dump -> what `ubt walk` prints for a mount of the blob. */
function expectedWalk(dump) {
  const lines = [];
  for (const line of dump.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(' ');
    if (f.length !== 11) throw new Error(`unexpected dump line: ${line}`);
    let payload = f[9];
    if (payload.startsWith('inline:')) payload = 'sha256:' + sha256(Buffer.from(payload.slice(7), 'hex'));
    else if (payload.startsWith('obj:')) {
      const sha = contentSha.get(payload.slice(4));
      payload = sha ? 'sha256:' + sha : 'ERR:EIO';
    }
    lines.push([f[0], f[1], f[2], f[3], statId(f[4]), statId(f[5]), f[6], f[7], f[8], payload, expectedXattrs(f[10], f[2])].join(' '));
  }
  return lines.join('\n') + '\n';
}

function dumpOf(buf) {
  return F.dumpBlob(F.openBlob(F.sourceFromBuffer(buf)));
}

function writeBlob(name, tree, opts = {}) {
  const buf = F.encodeBlob(tree, opts);
  writeFileSync(join(disk, 'blobs', `${name}.ub`), buf);
  return buf;
}

function writeExpect(name, buf) {
  writeFileSync(join(disk, 'expect', `${name}.walk`), expectedWalk(dumpOf(buf)));
}

// ---- golden vectors: made-up objects of the right size ------------------

const vectors = [];
for (const f of readdirSync(join(repo, 'format', 'vectors')).sort()) {
  if (!f.endsWith('.ub')) continue;
  const name = f.slice(0, -3);
  const buf = readFileSync(join(repo, 'format', 'vectors', f));
  const dump = readFileSync(join(repo, 'format', 'vectors', `${name}.dump`), 'utf8');
  for (const line of dump.split('\n')) {
    const m = / reg \d+ \d+ \d+ \d+ (\d+) \S+ obj:([0-9a-f]{64}) /.exec(line);
    if (m && !contentSha.has(m[2])) putObject('vstore', bytes(`vector:${m[2]}`, Number(m[1])), Buffer.from(m[2], 'hex'));
  }
  writeFileSync(join(disk, 'blobs', `v-${name}.ub`), buf);
  writeFileSync(join(disk, 'expect', `v-${name}.walk`), expectedWalk(dump));
  vectors.push(`v-${name}`);
}

// ---- t1: the main test image ----------------------------------------------

const capNetRaw = Buffer.from('0000000220000000000000000000000000000000', 'hex');
const acl = aclValue([[0x01, 7, -1], [0x02, 5, 1000], [0x04, 5, -1], [0x10, 5, -1], [0x20, 0, -1]]);
const sharedContent = bytes('shared', 2 << 20);
const aclFile = aclValue([[0x01, 6, -1], [0x02, 4, 1000], [0x04, 0, -1], [0x10, 4, -1], [0x20, 0, -1]]);
// The guest helper itself, with CAP_DAC_READ_SEARCH as a file capability (v2, effective):
// run as an ordinary user it can then read a mode-0000 file only if file caps work.
const capDacRead = Buffer.from('0100000204000000000000000000000000000000', 'hex');
const ubtBinary = process.env.UB_UBT ? readFileSync(process.env.UB_UBT) : null;
const selinux = xattrs([['security.selinux', 'system_u:object_r:bin_t:s0\0']]);

function manyNames(count) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789._-~';
  const names = new Map();
  while (names.size < count) {
    const r = rand();
    const len = r < 0.85 ? 1 + randInt(20) : r < 0.97 ? 21 + randInt(100) : 200 + randInt(56);
    let n = '';
    for (let k = 0; k < len; k++) n += r < 0.05 ? String.fromCharCode(0x80 + randInt(127)) : alphabet[randInt(alphabet.length)];
    if (n === '.' || n === '..' || n.includes('/')) continue;
    names.set(n, names.size);
  }
  return [...names.keys()];
}

const shTool = external('store', bytes('busybox', 150_000), 0o755, { xattrs: new Map(selinux) });
const hard = inline('three names, one inode\n', 0o600, { uid: 1000, gid: 1000 });
const many = manyNames(1500).map((n, i) => [n, i % 97 === 0 ? dir(0o755) : i % 3 === 0 ? hard : inline(`entry ${i}\n`)]);

const t1 = dir(0o755, [
  ['bin', dir(0o755, [
    ['ash', shTool],
    ['ping', external('store', bytes('ping', 71_000), 0o4755, { xattrs: xattrs([['security.capability', capNetRaw]]) })],
    ['sh', shTool],
    ...(ubtBinary ? [['ubt-cap', external('store', ubtBinary, 0o755, { xattrs: xattrs([['security.capability', capDacRead]]) })]] : []),
  ], { xattrs: new Map(selinux) })],
  ['data', dir(0o755, [
    ['big.bin', external('store', bytes('big', 3 << 20))],
    ['empty', meta(S_IFREG | 0o644)],
    ['f4096', inline(bytes('inline-max', 4096))],
    ['f4097', external('store', bytes('f4097', 4097))],
    ['one', inline('1')],
    ['shared.bin', external('store', sharedContent)],
  ])],
  ['dev', dir(0o755, [
    ['big', device(S_IFCHR, 4095, 0xfffff, 0o600)],
    ['null', device(S_IFCHR, 1, 3, 0o666)],
    ['sda', device(S_IFBLK, 8, 0)],
  ])],
  ['etc', dir(0o755, [
    ['hostname', inline('unionblob\n')],
    ['motd', inline('m'.repeat(64))],
    ['passwd', external('store', Buffer.from('root:x:0:0:root:/root:/bin/sh\n'.repeat(70)))],
  ], { mtimeNsec: 123_456_789 })],
  ['hard', dir(0o755, [['a', hard], ['b', hard]])],
  ['hl', hard],
  ['links', dir(0o755, [
    ['abs', symlink('/etc/hostname')],
    ['dangling', symlink('nowhere')],
    ['long', symlink('y/'.repeat(2047) + 'z')],
    ['rel', symlink('../etc/hostname')],
  ])],
  ['many', dir(0o755, many)],
  ['opq', dir(0o755, [['from-t1', inline('t1\n')]], { xattrs: xattrs([['trusted.overlay.opaque', 'y']]) })],
  ['perm', dir(0o2775, [
    // user 1000 may read only through the ACL (other: nothing)
    ['acl-file', inline('acl says yes\n', 0o640, { xattrs: xattrs([['system.posix_acl_access', aclFile]]) })],
    ['none', inline('no perms\n', 0o000)],
    ['all', inline('all perms\n', 0o7777)],
    ['owned', inline('owned\n', 0o640, { uid: 1000, gid: 100 })],
    ['sticky', dir(0o1777)],
    ['nobody', inline('big ids\n', 0o644, { uid: 4_294_967_294, gid: 65_536 })],
  ])],
  ['run', dir(0o755, [
    ['fifo', meta(S_IFIFO | 0o620)],
    ['sock', meta(S_IFSOCK | 0o755)],
  ])],
  ['times', dir(0o755, [
    // The ends of the format's 34-bit seconds (SPEC §4): 2242 and 1697.
    ['future', inline('2242\n', 0o644, { mtimeSec: 2 ** 33 - 1, mtimeNsec: 999_999_999 })],
    ['old', inline('1969\n', 0o644, { mtimeSec: -1, mtimeNsec: 500_000_000 })],
    ['oldest', inline('1697\n', 0o644, { mtimeSec: -(2 ** 33), mtimeNsec: 0 })],
  ])],
  ['x', dir(0o755, [
    ['acl', dir(0o755, [], { xattrs: xattrs([['system.posix_acl_access', acl], ['system.posix_acl_default', acl]]) })],
    // user.* on a symlink and a fifo (a tar's SCHILY.xattr can carry them): stored, not listed
    ['xlink', { ...symlink('zoo'), xattrs: xattrs([['user.on-link', '1'], ['security.selinux', 'system_u:object_r:bin_t:s0\0']]) }],
    ['xfifo', meta(S_IFIFO | 0o644, { xattrs: xattrs([['user.on-fifo', '2']]) })],
    ['zoo', inline('xattrs\n', 0o644, {
      xattrs: xattrs([
        ['user.a', '1'],
        ['user.empty', ''],
        ['user.big', bytes('xattr', 3000)],
        ['trusted.foo', 'bar'],
        ['trusted.overlay.redirect', '/elsewhere'],
        ['trusted.overlay.overlay.x', 'already escaped'],
        ['security.capability', capNetRaw],
      ]),
    })],
  ])],
]);
const t1buf = writeBlob('t1', t1, { inlineThreshold: 4096 });
writeExpect('t1', t1buf);
writeBlob('t1v', t1, { inlineThreshold: 4096 }); // gets fs-verity in the guest

// ---- t2: another image sharing one object with t1 ------------------------

const t2 = dir(0o755, [
  ['opq', dir(0o755, [['from-t2', inline('t2\n')]])],
  ['other.txt', external('store', bytes('other', 10_000))],
  ['shared-too.bin', external('store', sharedContent)],
]);
writeExpect('t2', writeBlob('t2', t2));

// ---- stores: several, symlinks, verity ---------------------------------------

const onlyStore2 = bytes('only-in-store2', 5000);
const multi = dir(0o755, [
  ['a', external('store', bytes('only-in-store', 5000))],
  ['b', external('store2', onlyStore2)],
]);
writeExpect('multi', writeBlob('multi', multi));

// evil.ub names one object; evil/ has a symlink in its place, evil2/ a symlinked objects dir.
const secret = bytes('secret', 6000);
writeFileSync(join(disk, 'outside', 'secret'), secret);
const secretDigest = F.verityDigest(secret).toString('hex');
writeBlob('evil', dir(0o755, [['leak', meta(S_IFREG | 0o644, { size: secret.length, digest: F.verityDigest(secret) })]]));
mkdirSync(join(disk, 'evil', 'objects', secretDigest.slice(0, 2)), { recursive: true });
symlinkSync('../../../outside/secret', join(disk, 'evil', 'objects', secretDigest.slice(0, 2), secretDigest.slice(2)));
mkdirSync(join(disk, 'evil2'));
symlinkSync('../store/objects', join(disk, 'evil2', 'objects'));
putObject('store', secret); // so basedir=evil:store finds the real one after skipping the link

// verity: good, tampered (same size, other bytes under the good name), no verity
const good = bytes('verity-good', 20_000);
const tamperedWant = bytes('verity-tampered', 9000);
const noverity = bytes('verity-none', 7000);
const ver = dir(0o755, [
  ['good', external('verstore', good)],
  ['noverity', external('verstore', noverity)],
  ['tampered', external('verstore', tamperedWant)],
]);
writeBlob('ver', ver);
const tamperedDigest = F.verityDigest(tamperedWant).toString('hex');
const tamperedPath = join('verstore', 'objects', tamperedDigest.slice(0, 2), tamperedDigest.slice(2));
const tamperedContent = Buffer.from(tamperedWant);
tamperedContent[4321] ^= 0x5a;
writeFileSync(join(disk, tamperedPath), tamperedContent);
const hexPath = (d) => `${d.slice(0, 2)}/${d.slice(2)}`;
const goodDigest = F.verityDigest(good).toString('hex');

// ---- c.ub and its corrupt variants -----------------------------------------

const cTree = dir(0o755, [
  ['d', dir(0o755, manyNames(300).map((n, i) => [n, i % 5 ? inline(`c ${i}\n`) : symlink(`t${i}`)]))],
  ...Array.from({ length: 30 }, (_, i) => [`f${String(i).padStart(2, '0')}`, i % 2
    ? external('store', bytes(`c-obj-${i}`, 100 + i * 300))
    : inline(`inline ${i}\n`, 0o644, { xattrs: xattrs([['user.i', String(i)], ['trusted.overlay.k', 'v'], ['security.selinux', 'x\0']]) })]),
  ['lnk', symlink('f00')],
  ['sub', dir(0o700, [['deeper', dir(0o700, [['leaf', inline('leaf\n')]])]])],
]);
const cbuf = writeBlob('c', cTree);
writeExpect('c', cbuf);

function fixHeaderCrc(b) {
  if (b.length < 512) return b;
  b.writeUInt32LE(0, F.HDR.headerCrc);
  b.writeUInt32LE(F.crc32c(b.subarray(0, 512)) >>> 0, F.HDR.headerCrc);
  return b;
}

// Mutations of c.ub, in turn. Most keep the header CRC valid (the kernel checks it, so a forged
// header with a bad CRC only tests one comparison) and aim at one section at a time, so every
// section reader (inodes, directories, data, digests, xattrs) sees damage, not just the biggest.
const cSections = F.openBlob(F.sourceFromBuffer(cbuf)).header.sections.filter((sec) => sec.size > 0);
const sectionField = (id, field) => F.SECTION_TABLE_OFFSET + id * F.SECTION_ENTRY_SIZE + F.SEC[field];
const edgeValues = (b, v) => [0, 1, v - 1, v + 1, v + 4096, v - 4096, b.length, b.length - 4096, 2 ** 32 - 1, 2 ** 52, randInt(b.length)]
  .map((x) => Math.max(0, x));

const MUTATIONS = [
  function flipsInOneSection(b) {
    const sec = cSections[randInt(cSections.length)];
    for (let k = 1 + randInt(8); k > 0; k--) b[sec.offset + randInt(sec.size)] ^= 1 + randInt(255);
    return b;
  },
  function flipsAnywherePastHeader(b) {
    for (let k = 1 + randInt(8); k > 0; k--) b[4096 + randInt(b.length - 4096)] ^= 1 + randInt(255);
    return b;
  },
  function headerBitsWithCrc(b) {
    for (let k = 1 + randInt(3); k > 0; k--) {
      const off = F.HDR.versionMajor + randInt(F.SECTION_TABLE_OFFSET + 12 * F.SECTION_ENTRY_SIZE - F.HDR.versionMajor);
      b[off] ^= 1 << randInt(8);
    }
    return fixHeaderCrc(b);
  },
  function sectionTableWithCrc(b) {
    // offset, size or count of a section set to an edge value: overlaps, past the end, huge
    const id = randInt(6);
    const field = ['offset', 'size', 'count'][randInt(3)];
    const old = Number(field === 'count' ? b.readUInt32LE(sectionField(id, field)) : b.readBigUInt64LE(sectionField(id, field)));
    const vals = edgeValues(b, old);
    const v = vals[randInt(vals.length)];
    if (field === 'count') b.writeUInt32LE(v >>> 0, sectionField(id, field));
    else b.writeBigUInt64LE(BigInt(v), sectionField(id, field));
    return fixHeaderCrc(b);
  },
  function countsWithCrc(b) {
    // root inode, inode/dirent counts, inline threshold, data bytes
    const field = ['rootIno', 'inodeCount', 'direntCount', 'dataBytes', 'inlineThreshold'][randInt(5)];
    const vals = edgeValues(b, Number(b.readBigUInt64LE(F.HDR[field])));
    const v = vals[randInt(vals.length)];
    if (field === 'inlineThreshold') b.writeUInt32LE(v >>> 0, F.HDR[field]);
    else b.writeBigUInt64LE(BigInt(v), F.HDR[field]);
    return fixHeaderCrc(b);
  },
  function truncatedKeepingHeaderSize(b) {
    // cut anywhere (also mid-page); half the time blob_size follows, so the range checks run
    const cut = b.subarray(0, randInt(b.length));
    if (cut.length >= 512 && rand() < 0.5) {
      cut.writeBigUInt64LE(BigInt(cut.length), F.HDR.blobSize);
      fixHeaderCrc(cut);
    }
    return cut;
  },
  function randomPage(b) {
    const page = 1 + randInt(b.length / 4096 - 1);
    for (let k = 0; k < 4096; k++) b[page * 4096 + k] = randInt(256);
    return b;
  },
  function inodeFieldsInRange(b) {
    // one inode's 32-bit words replaced by plausible values (another inode's index, a size)
    const ino = cSections[0].offset + randInt(cSections[0].size / F.INODE_SIZE) * F.INODE_SIZE;
    for (let k = 1 + randInt(3); k > 0; k--) b.writeUInt32LE(randInt(cbuf.length), ino + 4 * randInt(F.INODE_SIZE / 4));
    return b;
  },
];

const NCORRUPT = Number(process.env.UB_CORRUPT_COUNT ?? 1000);
for (let i = 0; i < NCORRUPT; i++) {
  const b = MUTATIONS[i % MUTATIONS.length](Buffer.from(cbuf));
  writeFileSync(join(disk, 'blobs', 'corrupt', `c${String(i).padStart(4, '0')}.ub`), b);
}

// c.ub as format version 1: a well-formed header of a version the module refuses by name;
// the same with the header crc left as sealed for version 2 (the version is read first); and
// as version 0, which no format had: corrupt.
const cv1 = Buffer.from(cbuf);
cv1.writeUInt16LE(1, 12);
writeFileSync(join(disk, 'blobs', 'v1-badcrc.ub'), cv1);
fixHeaderCrc(cv1);
writeFileSync(join(disk, 'blobs', 'v1.ub'), cv1);
const cv0 = Buffer.from(cbuf);
cv0.writeUInt16LE(0, 12);
fixHeaderCrc(cv0);
writeFileSync(join(disk, 'blobs', 'v0.ub'), cv0);

// Blobs that break one rule a reader enforces itself, CRCs valid (test/lib/crafted-blobs.mjs):
// blobs/crafted-NAME.ub, and crafted.list with "NAME PATH OP" lines for the guest.
const crafted = craftedBlobs();
const craftedList = [];
for (const [name, { blob, path, why }] of Object.entries(crafted)) {
  writeFileSync(join(disk, 'blobs', `crafted-${name}.ub`), blob);
  craftedList.push(`${name} ${path} ${why}`);
}
writeFileSync(join(disk, 'crafted.list'), craftedList.join('\n') + '\n');

// statfs of a header whose data_bytes is 2^64-1 (SPEC §3: informational, checked by nobody):
// f_blocks is its 4 KiB blocks rounded up plus the blob's, without wrapping (DIV_ROUND_UP did).
{
  const b = Buffer.from(t1buf);
  b.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, F.HDR.dataBytes);
  fixHeaderCrc(b);
  writeFileSync(join(disk, 'blobs', 'huge-data-bytes.ub'), b);
  writeFileSync(join(disk, 'huge-data-bytes.blocks'), `${(1n << 52n) + BigInt(b.length / 4096)}\n`);
}

// ---- real images: blobs of test/fixtures/make-images.sh's Debian images -------------
// The guest writes a manifest of each mount to out/; kernel.test.mjs diffs it with umoci's tree.

const images = [];
const imagesJson = process.env.UB_IMAGES_JSON;
if (imagesJson) {
  const desc = JSON.parse(readFileSync(imagesJson, 'utf8'));
  const tags = (process.env.UB_KERNEL_IMAGE_TAGS ?? 'a b').split(/\s+/).filter((t) => desc.images?.[t]);
  for (const tag of tags) {
    const src = desc.images[tag].variants?.['oci-layout-multitag'] ?? `${desc.layout}:${tag}`;
    execFileSync(process.execPath, [join(repo, 'bin', 'cfs'), 'build', src, '-o', join(disk, 'blobs', `img-${tag}.ub`),
      '--store', join(disk, 'imgstore')], { stdio: ['ignore', 'ignore', 'inherit'] });
    images.push({ tag, reference: desc.images[tag].reference });
  }
}
writeFileSync(join(out, 'images.json'), JSON.stringify(images, null, 2));

// ---- what the guest script needs to know --------------------------------------

const sharedDigest = F.verityDigest(sharedContent).toString('hex');
const t1Digest = F.verityDigest(t1buf).toString('hex');
const wrongDigest = t1Digest.slice(0, 63) + (t1Digest[63] === '0' ? '1' : '0');
const env = {
  VECTORS: vectors.join(' '),
  T1_DIGEST: t1Digest,
  WRONG_DIGEST: wrongDigest,
  SHARED_OBJ: `store/objects/${hexPath(sharedDigest)}`,
  SHARED_SHA: sha256(sharedContent),
  ONLY2_SHA: sha256(onlyStore2),
  SECRET_SHA: sha256(secret),
  VER_GOOD_OBJ: `verstore/objects/${hexPath(goodDigest)}`,
  VER_TAMPERED_OBJ: tamperedPath,
  VER_GOOD_SHA: sha256(good),
  VER_TAMPERED_SHA: sha256(tamperedContent),
  VER_NOVERITY_SHA: sha256(noverity),
  BIG_SHA: contentSha.get(F.verityDigest(bytes('big', 3 << 20)).toString('hex')),
  NCORRUPT: String(NCORRUPT),
  IMAGES: images.map((i) => i.tag).join(' '),
};
writeFileSync(join(disk, 'env.sh'), Object.entries(env).map(([k, v]) => `${k}='${v}'`).join('\n') + '\n');
console.log(JSON.stringify({ disk, vectors, t1Digest, images }));
