// Tests of the blob format (format/SPEC.md): CRC-32C, fs-verity digests, encoder, lazy reader,
// dump, golden vectors, corruption handling and a fast-check round-trip property.
// Run after `npx tsc -p tsconfig.json`: `npx ava test/format.test.mjs`.

import test from 'ava';
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import {
  crc32c, VerityHasher, verityDigest, verityDigestOfFile, encodeBlob, EncodeError, openBlob, BlobError,
  sourceFromBuffer, sourceFromFile, decodeTree, dumpBlob, objectPath, escapeBytes, newDir,
  S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFMT,
  BLOCK_SIZE, INODE_SIZE, INO, HDR, inodeOffset, SEC, SECTION_TABLE_OFFSET, SECTION_ENTRY_SIZE, SectionId, Layout, DT,
  XATTR_SET_SIZE, XSET, DIRENT, DIRENT_SIZE, dirChunkCount,
} from '../dist/format/index.js';
import { generateVectors, bigdirTree } from '../dist/format/vectors/gen.js';
import { prng } from './lib/prng.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..');
const vectorsDir = join(repo, 'format', 'vectors');
const VECTOR_NAMES = ['empty-root', 'small', 'bigdir', 'deep', 'dirpack'];

// ---------------------------------------------------------------------------------------------
// helpers


function node(mode, extra = {}) {
  return { mode, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: new Map(), size: 0, ...extra };
}
function dirNode(children = [], extra = {}) {
  return node(S_IFDIR | 0o755, { children: new Map(children), ...extra });
}
function inlineNode(content, extra = {}) {
  const inline = Buffer.from(content, 'latin1');
  return node(S_IFREG | 0o644, { size: inline.length, inline, ...extra });
}
function extNode(size, label, extra = {}) {
  return node(S_IFREG | 0o644, { size, digest: createHash('sha256').update(label).digest(), ...extra });
}
function linkNode(target) {
  return node(S_IFLNK | 0o777, { size: target.length, target });
}

const open = (blob) => openBlob(sourceFromBuffer(blob));
const vectorFile = (name, ext) => join(vectorsDir, `${name}.${ext}`);

/**
 * Canonical, comparable form of a tree with the encoder's documented normalisations applied:
 * children and xattrs in byte order, size 0 except for regular files and symlinks, rdev only on
 * devices, no inline/digest on empty files, shared nodes (hardlinks) as references by id.
 */
function canon(root) {
  const ids = new Map();
  const visit = (n) => {
    if (ids.has(n)) return { ref: ids.get(n) };
    const id = ids.size;
    ids.set(n, id);
    const type = n.mode & S_IFMT;
    const out = {
      id, mode: n.mode, uid: n.uid, gid: n.gid, ...storedMtime(n.mtimeSec, n.mtimeNsec),
      xattrs: [...(n.xattrs ?? new Map())].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, v.toString('hex')]),
      size: type === S_IFREG || type === S_IFLNK ? n.size : 0,
    };
    if (type === S_IFREG && n.size > 0) {
      if (n.inline) out.inline = n.inline.toString('hex');
      else out.digest = n.digest.toString('hex');
    }
    if (type === S_IFLNK) out.target = n.target;
    if (type === S_IFCHR || type === S_IFBLK) out.rdev = [n.rdevMajor ?? 0, n.rdevMinor ?? 0];
    if (type === S_IFDIR) {
      out.children = [...(n.children ?? new Map()).keys()].sort().map((name) => [name, visit(n.children.get(name))]);
    }
    return out;
  };
  return visit(root);
}

/** SPEC §4: mtimes are stored as 34-bit signed seconds; outside that range they are clamped. */
function storedMtime(mtimeSec, mtimeNsec) {
  if (mtimeSec < -(2 ** 33)) return { mtimeSec: -(2 ** 33), mtimeNsec: 0 };
  if (mtimeSec > 2 ** 33 - 1) return { mtimeSec: 2 ** 33 - 1, mtimeNsec: 999_999_999 };
  return { mtimeSec, mtimeNsec };
}

/** Run f; pass if it succeeds or throws BlobError, fail on any other exception or a slow case. */
function expectBlobErrorOrSuccess(t, label, f, budgetMs = 2000) {
  const start = performance.now();
  try {
    f();
  } catch (e) {
    if (!(e instanceof BlobError)) {
      t.fail(`${label}: threw ${e?.name}: ${e?.message}\n${e?.stack}`);
      return 'bad';
    }
    if (!/^(corrupt blob|format version \d+): [^\n]+$/.test(e.message)) t.fail(`${label}: message not one line: ${e.message}`);
    return 'rejected';
  } finally {
    const ms = performance.now() - start;
    if (ms > budgetMs) t.fail(`${label}: took ${ms.toFixed(0)} ms (budget ${budgetMs} ms)`);
  }
  return 'ok';
}

/** Everything a reader can be asked about a blob, for the corruption tests. */
function exerciseReader(blob, pathsToLookUp = []) {
  const r = open(blob);
  dumpBlob(r);
  decodeTree(r);
  for (let i = 0; i < r.header.inodeCount; i++) {
    const ino = r.inode(i);
    r.xattrs(i);
    if (ino.type === 'lnk') r.readlink(i);
    if (ino.type === 'reg' && ino.layout === Layout.INLINE) r.readInline(i);
    if (ino.type === 'reg' && ino.layout === Layout.EXTERNAL) r.digest(ino.payload);
    if (ino.type === 'dir') {
      for (const e of r.readdir(i, 0)) void e;
      r.lookup(i, 'zzz-not-there');
      r.lookup(i, '');
    }
  }
  for (const p of pathsToLookUp) r.resolvePath(p);
}

/**
 * SPEC §5 placement of every directory, as the compiler must write it (throws an AssertionError):
 * its data is st_size bytes at payload; an empty directory has payload 0; taken in inode order,
 * one of more than 4096 bytes starts on a new page after every page used so far, one of at most
 * 4096 bytes goes right after the used part of the lowest page that still has room for it, else
 * on a new page (first fit); the bytes outside directories are zero; DIRS.count is the number of
 * non-empty directories and DIRS.size where the last page's data ends. Returns the non-empty
 * directories as [ino, payload, payloadLen], in inode order.
 */
function checkDirPlacement(blob) {
  const r = open(blob);
  const dirs = r.header.sections[SectionId.DIRS];
  const placed = [];
  const used = []; // bytes used at the start of each DIRS page, by the rule (a plain scan)
  const owned = new Uint8Array(dirs.size);
  for (let i = 0; i < r.header.inodeCount; i++) {
    const n = r.inode(i);
    if (n.type !== 'dir') continue;
    assert.equal(n.size, n.payloadLen, `inode ${i}: the reader's payloadLen is st_size`);
    const len = n.size;
    if (len === 0) {
      assert.equal(n.payload, 0, `inode ${i}: empty directory at payload 0`);
      continue;
    }
    let page = len > 4096 ? -1 : used.findIndex((u) => u + len <= 4096);
    let want;
    if (page < 0) {
      want = used.length * 4096;
      for (let rest = len; rest > 0; rest -= 4096) used.push(Math.min(rest, 4096));
    } else {
      want = page * 4096 + used[page];
      used[page] += len;
    }
    assert.equal(n.payload, want, `inode ${i}: ${len} bytes placed by first fit`);
    for (let b = n.payload; b < n.payload + len; b++) {
      assert.equal(owned[b], 0, `DIRS byte ${b} belongs to two directories`);
      owned[b] = 1;
    }
    placed.push([i, n.payload, len]);
  }
  const end = used.length === 0 ? 0 : (used.length - 1) * 4096 + used[used.length - 1];
  assert.equal(dirs.size, end, 'DIRS.size is where the last page\'s data ends');
  for (let b = 0; b < dirs.size; b++) if (!owned[b]) assert.equal(blob[dirs.offset + b], 0, `DIRS byte ${b} outside directories is zero`);
  assert.equal(dirs.count, placed.length, 'DIRS.count is the number of non-empty directories');
  return placed;
}

/**
 * Readdir of directory `ino` from every integer position 0..end+9 and resuming from every entry
 * boundary (SPEC §5 positions: 2 + c * 4096 + k * 8). Returns the entries read from 0.
 */
function checkEveryPosition(t, r, ino) {
  const all = [...r.readdir(ino, 0)];
  t.is(all[0].name, '.');
  t.is(all[1].name, '..');
  // Entry positions: pos of entry j is nextPos of entry j-1.
  const positions = all.map((e, j) => (j === 0 ? 0 : all[j - 1].nextPos));
  const end = all[all.length - 1].nextPos;
  t.is(end, all.length === 2 ? 2 : 2 + dirChunkCount(r.inode(ino).payloadLen) * 4096);
  for (let j = 2; j < all.length; j++) t.is((positions[j] - 2) % 8, 0);
  // Every integer position: the first entry yielded is the first entry at or after it.
  let j = 0;
  for (let pos = 0; pos <= end + 9; pos++) {
    while (j < all.length && positions[j] < pos) j++;
    const first = r.readdir(ino, pos).next();
    if (j >= all.length) {
      if (!first.done) {
        t.fail(`inode ${ino} pos ${pos}: expected the end`);
        return all;
      }
    } else if (first.done || first.value.name !== all[j].name || first.value.nextPos !== all[j].nextPos) {
      t.fail(`inode ${ino} pos ${pos}: expected ${all[j].name}`);
      return all;
    }
  }
  // From every entry boundary, resuming reads exactly the rest.
  const tailNames = all.map((e) => e.name);
  for (let k = 0; k < all.length; k += 1) {
    const got = [...r.readdir(ino, positions[k])].map((e) => e.name);
    if (got.length !== all.length - k || got[0] !== tailNames[k] || got[got.length - 1] !== tailNames[tailNames.length - 1]) {
      t.fail(`inode ${ino}: resume at ${positions[k]}`);
      return all;
    }
  }
  return all;
}

/** Rewrite the header CRC after editing header fields, so deeper checks are reached. */
function fixHeaderCrc(blob) {
  blob.writeUInt32LE(0, HDR.headerCrc);
  blob.writeUInt32LE(crc32c(blob.subarray(0, 512)), HDR.headerCrc);
  return blob;
}

function sectionEntry(id) {
  return SECTION_TABLE_OFFSET + id * SECTION_ENTRY_SIZE;
}

const vectors = generateVectors();
const vectorByName = new Map(vectors.map((v) => [v.name, v]));

// ---------------------------------------------------------------------------------------------
// CRC-32C and fs-verity

test('crc32c: check value, incremental, slicing matches bytewise', (t) => {
  t.is(crc32c(Buffer.from('123456789')), 0xe3069283);
  t.is(crc32c(Buffer.alloc(0)), 0);
  t.is(crc32c(Buffer.alloc(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  t.is(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43); // RFC 3720 B.4: 32 bytes of 0xff
  const rand = prng(1);
  const data = Buffer.from(Array.from({ length: 10_007 }, () => Math.floor(rand() * 256)));
  const whole = crc32c(data);
  for (const cut of [0, 1, 7, 8, 9, 4096, 10_006, 10_007]) {
    t.is(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), whole, `cut at ${cut}`);
  }
  // Bytewise reference for odd lengths and offsets (exercises the 8-byte loop and the tail).
  const bytewise = (buf) => {
    let c = ~0;
    for (const b of buf) {
      c ^= b;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    }
    return ~c >>> 0;
  };
  for (let len = 0; len < 40; len++) t.is(crc32c(data.subarray(3, 3 + len)), bytewise(data.subarray(3, 3 + len)));
});

const KNOWN_VERITY = [
  // Computed with `fsverity digest` (fsverity-utils).
  [Buffer.alloc(0), '3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95'],
  [Buffer.from('a'), 'bce75948b9e7510293f8f2720412af9697c1479281323f3f220623fb8e94b557'],
  [Buffer.alloc(4096), 'babc284ee4ffe7f449377fbf6692715b43aec7bc39c094a95878904d34bac97e'],
  [Buffer.from(Array.from({ length: 1_000_000 }, (_, i) => i % 251)), 'dbe1b6c44240d0b0642a25e6c1d5e399381c87474f3dcda2f3acb9495fa159d6'],
];

test('verity: known digests, any chunking', (t) => {
  for (const [data, hex] of KNOWN_VERITY) {
    t.is(verityDigest(data).toString('hex'), hex, `size ${data.length}`);
    for (const chunk of [1, 100, 4095, 4096, 4097, 65536]) {
      if (data.length > 100_000 && chunk < 100) continue;
      const h = new VerityHasher();
      for (let at = 0; at < data.length; at += chunk) h.update(data.subarray(at, at + chunk));
      t.is(h.digest().toString('hex'), hex, `size ${data.length}, chunks of ${chunk}`);
    }
  }
  const h = new VerityHasher();
  h.digest();
  t.throws(() => h.digest());
  t.throws(() => h.update(Buffer.alloc(1)));
});

let haveFsverity = true;
try {
  execFileSync('fsverity', ['--version'], { stdio: 'ignore' });
} catch {
  haveFsverity = false;
}

(haveFsverity ? test : test.skip)('verity: matches `fsverity digest` at tree-shape boundaries', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ub-verity-'));
  try {
    const rand = prng(42);
    // 5 MB has three tree levels (1221 data blocks -> 10 hash blocks -> root).
    const sizes = [0, 1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 129 * 4096, 5_000_003];
    for (const size of sizes) {
      const data = Buffer.alloc(size);
      for (let i = 0; i < size; i += 4) {
        const v = (rand() * 2 ** 32) >>> 0;
        for (let b = 0; b < 4 && i + b < size; b++) data[i + b] = (v >>> (8 * b)) & 0xff;
      }
      const file = join(dir, `f${size}`);
      writeFileSync(file, data);
      const expected = execFileSync('fsverity', ['digest', file]).toString().trim().split(' ')[0];
      t.is('sha256:' + (await verityDigestOfFile(file)).toString('hex'), expected, `size ${size}`);
      t.is('sha256:' + verityDigest(data).toString('hex'), expected, `size ${size} (buffer)`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// golden vectors

test('vectors: regenerating with gen.js gives byte-identical files', (t) => {
  const out = mkdtempSync(join(tmpdir(), 'ub-vectors-'));
  try {
    execFileSync(process.execPath, [join(repo, 'dist/format/vectors/gen.js'), out], { stdio: 'ignore' });
    const files = readdirSync(out).sort();
    t.deepEqual(files, VECTOR_NAMES.flatMap((n) => [`${n}.dump`, `${n}.ub`]).sort());
    for (const f of files) {
      t.true(readFileSync(join(out, f)).equals(readFileSync(join(vectorsDir, f))), `${f} differs from format/vectors/${f}`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('vectors: committed blobs decode and dump to the committed .dump (buffer and file sources)', (t) => {
  for (const name of VECTOR_NAMES) {
    const blob = readFileSync(vectorFile(name, 'ub'));
    const dump = readFileSync(vectorFile(name, 'dump'), 'latin1');
    const r = open(blob);
    r.checkSections();
    t.is(dumpBlob(r), dump, name);
    const src = sourceFromFile(vectorFile(name, 'ub'), 2); // tiny cache: exercises eviction
    const fr = openBlob(src);
    t.is(dumpBlob(fr), dump, `${name} via sourceFromFile`);
    fr.checkSections();
    fr.close();
    // Round trip through the tree.
    t.true(encodeBlob(decodeTree(r)).equals(blob), `${name} re-encodes identically`);
  }
});

test('vectors: small has what the contract promises', (t) => {
  const r = open(vectorByName.get('small').blob);
  const ino = (p) => r.resolvePath(p);
  t.is(ino('/'), 0);
  t.is(ino('/bin/sh'), ino('/bin/ash'));
  t.is(r.inode(ino('/bin/sh')).nlink, 2);
  t.is(ino('/hl-a'), ino('/names/hl-c'));
  t.is(r.inode(ino('/hl-a')).nlink, 3);
  t.is(r.inode(0).nlink, 2 + 9);
  t.is(r.readlink(ino('/etc/link-to-hostname')), 'hostname');
  t.is(r.readInline(ino('/etc/hostname')).toString(), 'unionblob\n');
  t.is(r.inode(ino('/etc/hostname')).payload, r.inode(ino('/etc/hostname.copy')).payload, 'DATA items are shared');
  t.is(r.inode(ino('/etc/same-as-target')).payload, r.inode(ino('/etc/link-to-hostname')).payload);
  t.deepEqual(r.inode(ino('/dev/big')), { ...r.inode(ino('/dev/big')), rdevMajor: 4095, rdevMinor: 0xfffff });
  t.is(r.inode(ino('/share/old')).mtimeSec, -1);
  t.is(r.inode(ino('/tmp')).mode & 0o7777, 0o1777);
  t.is(r.inode(ino('/bin/ping')).mode & 0o7777, 0o4755);
  t.is(r.inode(ino('/run/sock')).uid, 4294967295);
  t.is(r.xattrs(ino('/overlay/opaque')).get('trusted.overlay.opaque').toString(), 'y');
  t.is(r.inode(ino('/bin')).xattrSet, r.inode(ino('/bin/sh')).xattrSet, 'xattr sets are shared');
  t.is(ino('/names/' + 'n'.repeat(255)) !== undefined, true);
  t.is(ino('/names/\xff\xfe\x80') !== undefined, true);
  t.is(ino('/names/' + Buffer.from('日本語').toString('latin1')) !== undefined, true);
  t.is(ino('/nope'), undefined);
  t.is(ino('/etc/hostname/x'), undefined);
  t.is(ino('/etc/../bin/./sh'), ino('/bin/sh'));
  const d = r.digest(r.inode(ino('/etc/passwd')).payload);
  t.is(objectPath('/store', d), `/store/objects/${d.toString('hex').slice(0, 2)}/${d.toString('hex').slice(2)}`);
  t.is(r.objectPath('S', d), objectPath('S', d));
  // DIGESTS sorted and unique.
  const digests = Array.from({ length: r.header.sections[SectionId.DIGESTS].count }, (_, i) => r.digest(i).toString('hex'));
  t.deepEqual(digests, [...new Set(digests)].sort());
  // DATA items never cross a page.
  for (let i = 0; i < r.header.inodeCount; i++) {
    const n = r.inode(i);
    if (n.layout === Layout.INLINE) t.is(Math.floor(n.payload / 4096), Math.floor((n.payload + n.payloadLen - 1) / 4096));
  }
  t.true(r.header.sections[SectionId.DATA].size > 4096, 'the vector exercises page confinement');
});

test('dump escaping', (t) => {
  t.is(escapeBytes('plain/Path-1.txt'), 'plain/Path-1.txt');
  t.is(escapeBytes('a b\\c\x00\x7f\xff!~'), 'a\\x20b\\x5cc\\x00\\x7f\\xff!~');
});

// ---------------------------------------------------------------------------------------------
// encoder behaviour

test('encode: BFS inode order, nlink, parent, dirent types, empty sections', (t) => {
  const shared = inlineNode('x');
  const tree = dirNode([
    ['b', dirNode([['z', shared], ['deep', dirNode([['leaf', node(S_IFIFO | 0o644)]])]])],
    ['a', shared],
    ['c', dirNode()],
    ['dev', node(S_IFCHR | 0o600, { rdevMajor: 1, rdevMinor: 3 })],
  ]);
  const blob = encodeBlob(tree);
  const r = open(blob);
  // BFS: root, then a b c dev (name order), then b's children deep, z (z is a, already numbered).
  t.is(r.resolvePath('/a'), 1);
  t.is(r.resolvePath('/b'), 2);
  t.is(r.resolvePath('/c'), 3);
  t.is(r.resolvePath('/dev'), 4);
  t.is(r.resolvePath('/b/deep'), 5);
  t.is(r.resolvePath('/b/z'), 1);
  t.is(r.resolvePath('/b/deep/leaf'), 6);
  t.is(r.inode(1).nlink, 2);
  t.is(r.inode(0).nlink, 4);
  t.is(r.inode(2).nlink, 3);
  t.is(r.inode(3).nlink, 2);
  t.is(r.inode(5).parent, 2);
  t.is(r.inode(0).parent, 0);
  t.is(r.inode(3).payloadLen, 0);
  t.is(r.inode(3).payload, 0);
  t.is(r.inode(3).size, 0);
  t.is(r.inode(2).size, 2 * 8 + 'deep'.length + 'z'.length, 'a directory\'s size is its DIRS bytes');
  t.is(r.inode(2).payloadLen, 21);
  t.deepEqual([...r.readdir(0, 0)].map((e) => [e.name, e.ino, e.dtype]), [
    ['.', 0, DT.DIR], ['..', 0, DT.DIR], ['a', 1, DT.REG], ['b', 2, DT.DIR], ['c', 3, DT.DIR], ['dev', 4, DT.CHR],
  ]);
  t.is(r.header.direntCount, 7);
  t.is(r.header.dataBytes, 1);
  // Empty DIGESTS / XATTR sections sit where they would start, with size 0.
  const s = r.header.sections;
  t.is(s[SectionId.DIGESTS].size, 0);
  t.is(s[SectionId.DIGESTS].offset, s[SectionId.DATA].offset + 4096);
  t.is(s[SectionId.XATTR_DATA].offset, s[SectionId.DIGESTS].offset);
  t.is(blob.length, s[SectionId.XATTR_DATA].offset);
  t.is(blob.length % 4096, 0);
});

test('encode: reproducible regardless of Map insertion order', (t) => {
  const make = (reverse) => {
    const order = (arr) => (reverse ? [...arr].reverse() : arr);
    const x = new Map(order([['user.b', Buffer.from('2')], ['user.a', Buffer.from('1')], ['security.x', Buffer.alloc(0)]]));
    return dirNode(order([
      ['one', inlineNode('1', { xattrs: x })],
      ['two', extNode(100, 'two')],
      ['three', extNode(100, 'three')],
      ['sub', dirNode(order([['k', linkNode('t')], ['j', inlineNode('1')]]))],
    ]));
  };
  t.true(encodeBlob(make(false)).equals(encodeBlob(make(true))));
});

test('encode: 48-byte inodes, 85 to a page, the last 16 bytes of each page zero', (t) => {
  // 200 files: inodes 85 and 170 start the second and third pages of INODES.
  const files = [];
  for (let k = 0; k < 199; k++) files.push([`f${String(k).padStart(3, '0')}`, node(S_IFREG | 0o600, { uid: k + 1 })]);
  const blob = encodeBlob(dirNode(files));
  const r = open(blob);
  const sec = r.header.sections[SectionId.INODES];
  t.is(sec.count, 200);
  t.is(sec.size, 2 * 4096 + 30 * 48, 'two full pages, then 30 inodes');
  for (const page of [0, 1]) {
    const end = sec.offset + page * 4096 + 4096;
    t.true(blob.subarray(end - 16, end).every((b) => b === 0), `padding of page ${page}`);
  }
  // Inode i sits at (i / 85) * 4096 + (i % 85) * 48: check a few by their uid, read raw.
  const names = [...r.readdir(0)].map((e) => [e.name, e.ino]);
  for (const [name, i] of names.filter(([, i]) => [1, 84, 85, 86, 169, 170, 199].includes(i))) {
    const at = sec.offset + Math.floor(i / 85) * 4096 + (i % 85) * 48;
    t.is(blob.readUInt32LE(at + 8), Number(name.slice(1)) + 1, `inode ${i} (${name}) uid, read at ${at}`);
    t.is(blob.readUInt16LE(at), S_IFREG | 0o600);
  }
});

test('encode: mtimes outside 1697..2242 are clamped, with one warning per blob', (t) => {
  const warnings = [];
  const tree = dirNode([
    ['big', node(S_IFREG | 0o644, { mtimeSec: 2 ** 40, mtimeNsec: 5 })],
    ['edge-hi', node(S_IFREG | 0o644, { mtimeSec: 2 ** 33 - 1, mtimeNsec: 999_999_999 })],
    ['edge-lo', node(S_IFREG | 0o644, { mtimeSec: -(2 ** 33), mtimeNsec: 7 })],
    ['small', node(S_IFREG | 0o644, { mtimeSec: -(2 ** 33) - 1, mtimeNsec: 5 })],
  ]);
  const blob = encodeBlob(tree, { warn: (m) => warnings.push(m) });
  const r = open(blob);
  const at = (p) => { const n = r.inode(r.resolvePath(p)); return [n.mtimeSec, n.mtimeNsec]; };
  t.deepEqual(at('/big'), [2 ** 33 - 1, 999_999_999]);
  t.deepEqual(at('/edge-hi'), [2 ** 33 - 1, 999_999_999]);
  t.deepEqual(at('/edge-lo'), [-(2 ** 33), 7]);
  t.deepEqual(at('/small'), [-(2 ** 33), 0]);
  t.is(warnings.length, 1);
  t.regex(warnings[0], /^2 mtime\(s\) outside -8589934592\.\.8589934591 s .*first: \/big at 1099511627776 s/);
  // Raw bits: seconds in the low 34 bits (two's complement), nanoseconds above them.
  const raw = blob.readBigUInt64LE(r.header.sections[SectionId.INODES].offset + inodeOffset(r.resolvePath('/edge-lo')) + INO.mtime);
  t.is(raw, (7n << 34n) | (1n << 33n));
  encodeBlob(dirNode([['in-range', node(S_IFREG, { mtimeSec: -1 })]]), { warn: (m) => warnings.push(m) });
  t.is(warnings.length, 1, 'no warning when every time fits');
});

test('encode: DATA page confinement and dedup with a 4096 threshold', (t) => {
  const children = [];
  for (let i = 0; i < 20; i++) children.push([`f${String(i).padStart(2, '0')}`, inlineNode(String.fromCharCode(65 + (i % 5)).repeat(1000 + i * 150))]);
  children.push(['dup', inlineNode('A'.repeat(1000))]);
  children.push(['full', inlineNode('F'.repeat(4096))]);
  const blob = encodeBlob(dirNode(children), { inlineThreshold: 4096 });
  const r = open(blob);
  t.is(r.header.inlineThreshold, 4096);
  for (let i = 1; i < r.header.inodeCount; i++) {
    const n = r.inode(i);
    t.is(Math.floor(n.payload / 4096), Math.floor((n.payload + n.payloadLen - 1) / 4096), `inode ${i}`);
  }
  t.is(r.inode(r.resolvePath('/dup')).payload, r.inode(r.resolvePath('/f00')).payload);
  t.is(r.header.sections[SectionId.DATA].count, 21);
  t.is(r.readInline(r.resolvePath('/full')).toString(), 'F'.repeat(4096));
});

test('encode: xattr sets deduplicated, entries sorted, longest prefix used', (t) => {
  const acl = Buffer.from('02000000', 'hex');
  const xa = () => new Map([
    ['user.z', Buffer.from('z')], ['system.posix_acl_default', acl], ['system.posix_acl_access', acl],
    ['trusted.overlay.opaque', Buffer.from('y')], ['security.capability', Buffer.alloc(20, 1)], ['other.name', Buffer.alloc(0)],
  ]);
  const blob = encodeBlob(dirNode([['a', inlineNode('a', { xattrs: xa() })], ['b', inlineNode('b', { xattrs: xa() })]]));
  const r = open(blob);
  t.is(r.header.sections[SectionId.XATTR_INDEX].count, 1);
  t.is(r.header.sections[SectionId.XATTR_DATA].count, 6);
  t.deepEqual([...r.xattrs(1).keys()], [
    'other.name', 'security.capability', 'system.posix_acl_access', 'system.posix_acl_default', 'trusted.overlay.opaque', 'user.z',
  ]);
  // Walk the raw entries: prefix ids and suffix lengths.
  const sx = r.header.sections[SectionId.XATTR_DATA];
  const data = blob.subarray(sx.offset, sx.offset + sx.size);
  const seen = [];
  for (let at = 0; at < data.length;) {
    const suffixLen = data[at + 1];
    const valueLen = data.readUInt32LE(at + 4);
    seen.push([data[at], data.toString('latin1', at + 8, at + 8 + suffixLen)]);
    at += 8 + suffixLen + valueLen;
  }
  t.deepEqual(seen, [[0, 'other.name'], [3, 'capability'], [4, ''], [5, ''], [2, 'overlay.opaque'], [1, 'z']]);
});

test('encode: invalid input is rejected with clear errors', (t) => {
  const bad = (tree, re, opts) => {
    const e = t.throws(() => encodeBlob(tree, opts), { instanceOf: EncodeError });
    t.regex(e.message, re);
  };
  bad(inlineNode('x'), /root must be a directory/);
  bad(dirNode([['', inlineNode('x')]]), /name must be 1\.\.255/);
  bad(dirNode([['n'.repeat(256), inlineNode('x')]]), /name must be 1\.\.255/);
  bad(dirNode([['a/b', inlineNode('x')]]), /"\/" or NUL/);
  bad(dirNode([['a\0b', inlineNode('x')]]), /"\/" or NUL/);
  bad(dirNode([['.', inlineNode('x')]]), /"\." or "\.\."/);
  bad(dirNode([['..', inlineNode('x')]]), /"\." or "\.\."/);
  bad(dirNode([['é€', inlineNode('x')]]), /binary string/);
  bad(dirNode([['l', linkNode('')]]), /\/l: symlink target must be 1\.\.4095/);
  bad(dirNode([['l', linkNode('x'.repeat(4096))]]), /symlink target must be 1\.\.4095/);
  bad(dirNode([['l', { ...linkNode('abc'), size: 2 }]]), /symlink size/);
  bad(dirNode([['f', inlineNode('x'.repeat(65))]]), /exceeds the inline threshold 64/);
  bad(dirNode([['f', inlineNode('x'.repeat(10))]]), /exceeds the inline threshold 4/, { inlineThreshold: 4 });
  bad(dirNode(), /inlineThreshold/, { inlineThreshold: 4097 });
  bad(dirNode([['f', { ...inlineNode('abc'), size: 4 }]]), /inline has 3 bytes but size is 4/);
  bad(dirNode([['f', node(S_IFREG | 0o644, { size: 10, digest: Buffer.alloc(31) })]]), /digest must be 32 bytes/);
  bad(dirNode([['f', node(S_IFREG | 0o644, { size: 10 })]]), /neither inline content nor digest/);
  bad(dirNode([['f', node(S_IFREG | 0o644, { size: 1, inline: Buffer.from('x'), digest: Buffer.alloc(32) })]]), /both inline and digest/);
  bad(dirNode([['f', inlineNode('x', { xattrs: new Map([['', Buffer.alloc(0)]]) })]]), /xattr "": name must be 1\.\.255/);
  bad(dirNode([['f', inlineNode('x', { xattrs: new Map([['user.' + 'x'.repeat(251), Buffer.alloc(0)]]) })]]), /name must be 1\.\.255/);
  bad(dirNode([['f', inlineNode('x', { xattrs: new Map([['user.big', Buffer.alloc(65537)]]) })]]), /at most 65536/);
  // trusted.overlay.X is shown as trusted.overlay.overlay.X: 8 more bytes, and XATTR_NAME_MAX is 255
  const overlayName = (n) => 'trusted.overlay.' + 'o'.repeat(n - 16);
  t.is(encodeBlob(dirNode([['f', inlineNode('x', { xattrs: new Map([[overlayName(247), Buffer.alloc(1)]]) })]])).length > 0, true);
  t.is(encodeBlob(dirNode([['f', inlineNode('x', { xattrs: new Map([['user.' + 'u'.repeat(250), Buffer.alloc(1)]]) })]])).length > 0, true);
  const e = t.throws(() => encodeBlob(dirNode([['d', dirNode([['f', inlineNode('x', { xattrs: new Map([[overlayName(248), Buffer.alloc(1)]]) })]])]])), { instanceOf: EncodeError });
  t.is(e.message, `/d/f: xattr "${overlayName(248)}": a trusted.overlay.* name must be at most 247 bytes (a mount shows it escaped, 8 bytes longer, and cannot serve a name over 255)`);
  bad(dirNode([['f', inlineNode('x', { uid: -1 })]]), /uid/);
  bad(dirNode([['f', inlineNode('x', { gid: 2 ** 32 })]]), /gid/);
  bad(dirNode([['f', inlineNode('x', { mtimeNsec: 1e9 })]]), /mtimeNsec/);
  bad(dirNode([['f', inlineNode('x', { mtimeSec: 1.5 })]]), /mtimeSec/);
  bad(dirNode([['f', node(0o644)]]), /invalid mode/);
  bad(dirNode([['c', node(S_IFCHR, { rdevMajor: 4096, rdevMinor: 0 })]]), /major/);
  bad(dirNode([['c', node(S_IFBLK, { rdevMajor: 0, rdevMinor: 0x100000 })]]), /minor/);
  // A directory reached twice: a cycle and a hardlinked directory.
  const root = dirNode();
  const sub = dirNode([['up', root]]);
  root.children.set('sub', sub);
  bad(root, /\/sub\/up: directory reached twice/);
  const shared = dirNode();
  bad(dirNode([['x', shared], ['y', shared]]), /\/y: directory reached twice/);
  // Accepted edge cases.
  t.notThrows(() => encodeBlob(dirNode([['l', linkNode('x'.repeat(4095))], ['n'.repeat(255), inlineNode('x')]])));
  t.notThrows(() => encodeBlob(dirNode([['f', inlineNode('x'.repeat(4096))]]), { inlineThreshold: 4096 }));
  t.notThrows(() => encodeBlob(dirNode([['f', inlineNode('x', { xattrs: new Map([['user.big', Buffer.alloc(65536)]]) })]])));
});

// ---------------------------------------------------------------------------------------------
// lookup and readdir on bigdir

test('bigdir: every entry found, absent names not found', (t) => {
  const r = open(vectorByName.get('bigdir').blob);
  const entries = [...r.readdir(0)];
  t.is(entries.length, 3000);
  t.true(dirChunkCount(r.inode(0).payloadLen) >= 5, 'spans several chunks');
  const names = entries.map((e) => e.name);
  t.deepEqual(names, [...names].sort());
  for (const e of entries) {
    t.is(r.lookup(0, e.name), e.ino);
    t.is(r.lookup(0, Buffer.from(e.name, 'latin1')), e.ino);
  }
  const present = new Set(names);
  const absent = [
    '\x01', '!', names[0].slice(0, -1) || '\x01', names[names.length - 1] + 'z', '\xff', '\xff\xff', 'zzzzzzzzzzzz~',
    ...names.map((n) => n + '\x01'), // right after each entry: between entries and across chunk ends
    ...names.map((n) => n.slice(0, -1) + String.fromCharCode(n.charCodeAt(n.length - 1) - 1)).filter((n) => n.length > 0),
  ].filter((n) => n.length > 0 && !present.has(n));
  t.true(absent.length > 3000);
  for (const n of absent) t.is(r.lookup(0, n), undefined, JSON.stringify(n));
  t.is(r.lookup(0, ''), undefined);
  t.is(r.lookup(0, 'x'.repeat(256)), undefined);
});

test('bigdir: readdir resumes from every position', (t) => {
  const r = open(vectorByName.get('bigdir').blob);
  checkEveryPosition(t, r, 0);
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// directory packing (SPEC §5)

test('vectors: every vector follows the directory placement rules; deep is small', (t) => {
  for (const name of VECTOR_NAMES) t.notThrows(() => checkDirPlacement(vectorByName.get(name).blob), name);
  // 101 directories of 12 bytes each share one DIRS page (they were 101 pages before).
  const deep = open(vectorByName.get('deep').blob);
  t.is(deep.header.sections[SectionId.DIRS].size, 101 * 12);
  t.is(deep.header.sections[SectionId.DIRS].count, 101);
  t.is(vectorByName.get('deep').blob.length, 5 * 4096, 'header + INODES (2 pages) + DIRS + DATA');
  t.is(deep.inode(0).size, 12);
});

test('encode: many small directories share pages and none crosses a page', (t) => {
  const rand = prng(0x5a11);
  const file = node(S_IFREG | 0o644);
  const expected = new Map();
  const root = dirNode();
  for (let d = 0; d < 3000; d++) {
    // Mostly a few entries, now and then a directory of one to three chunks.
    const want = d % 397 === 5 ? 100 + Math.floor(rand() * 300) : Math.floor(rand() * 8);
    const names = new Set();
    while (names.size < want) {
      const len = rand() < 0.95 ? 1 + Math.floor(rand() * 40) : 200 + Math.floor(rand() * 56);
      names.add(Buffer.from(Array.from({ length: len }, () => 0x21 + Math.floor(rand() * 94)).map((b) => (b === 0x2f ? 0x5f : b))).toString('latin1'));
    }
    names.delete('.');
    names.delete('..');
    const name = `d${String(d).padStart(4, '0')}`;
    root.children.set(name, dirNode([...names].map((n) => [n, file])));
    expected.set(name, [...names].sort());
  }
  const blob = encodeBlob(root);
  const placed = checkDirPlacement(blob);
  const r = open(blob);
  const dirs = r.header.sections[SectionId.DIRS];
  t.is(placed.length, [...expected.values()].filter((n) => n.length > 0).length + 1);
  t.true(placed.some(([, , len]) => len > 4096), 'some directories span several chunks');
  // Pages are shared: far fewer DIRS pages than directories, and little of them is left empty.
  const pages = Math.ceil(dirs.size / 4096);
  const used = placed.reduce((n, [, , len]) => n + len, 0);
  t.true(pages * 10 < placed.length, `${pages} pages for ${placed.length} directories`);
  t.true(used / dirs.size > 0.97, `DIRS is ${((100 * used) / dirs.size).toFixed(1)}% directory data`);
  // First fit: some directories went back to fill the tail of an earlier page.
  let back = 0;
  for (let k = 1; k < placed.length; k++) if (placed[k][1] < placed[k - 1][1]) back++;
  t.true(back > 10, `${back} directories filled an earlier page`);
  // Everything reads back; lookups find every name and nothing else.
  for (const [name, names] of expected) {
    const ino = r.lookup(0, name);
    t.deepEqual([...r.readdir(ino)].map((e) => e.name), names, name);
    for (const n of names) if (r.lookup(ino, n) === undefined) t.fail(`${name}/${n} not found`);
    t.is(r.lookup(ino, names.length ? names[names.length - 1] + '\x01' : 'x'), undefined);
  }
  t.true(decodeTree(r) !== undefined);
});

test('encode: directory entries of exactly 4096 bytes fill one chunk, 4097 bytes take two', (t) => {
  const file = node(S_IFREG | 0o644);
  const names = (count, lastLen = 248) =>
    Array.from({ length: count }, (_, i) => String(i).padStart(2, '0') + 'x'.repeat((i === count - 1 ? lastLen : 248) - 2));
  // 16 * (8 + 248) = 4096; 15 * 256 + (8 + 249) = 4097; 16 * (8 + 248) - 1: one byte short of a page.
  const tree = dirNode([
    ['a', dirNode([['tiny', file]])], // 12 bytes, so the next directory cannot start at a page boundary
    ['exact', dirNode(names(16).map((n) => [n, file]))],
    ['over', dirNode(names(16, 249).map((n) => [n, file]))],
    ['under', dirNode(names(16, 247).map((n) => [n, file]))],
  ]);
  const blob = encodeBlob(tree);
  checkDirPlacement(blob);
  const r = open(blob);
  const at = (p) => r.inode(r.resolvePath(p));
  t.is(r.inode(0).payload, 0);
  t.is(at('/a').payload, r.inode(0).payloadLen);
  const exact = at('/exact');
  t.is(exact.payloadLen, 4096);
  t.is(exact.size, 4096);
  t.is(exact.payload % 4096, 0, 'a 4096-byte directory starts a new page');
  t.true(exact.payload > at('/a').payload);
  const over = at('/over');
  t.is(over.payloadLen, 4096 + 257, 'first chunk padded to 4096, the second holds the last entry');
  t.is(over.payload, exact.payload + 4096);
  const under = at('/under');
  t.is(under.payloadLen, 4095);
  t.is(under.payload, Math.ceil((over.payload + over.payloadLen) / 4096) * 4096, '4095 bytes do not fit after /over');
  // The raw chunks of /over: 15 dirents in chunk 0, zero padding from 3840 to 4096, 1 dirent in chunk 1.
  const dirsAt = r.header.sections[SectionId.DIRS].offset + over.payload;
  t.is(blob.readUInt16LE(dirsAt + DIRENT.nameoff), 15 * 8);
  t.true(blob.subarray(dirsAt + 15 * 256, dirsAt + 4096).every((b) => b === 0));
  t.is(blob.readUInt16LE(dirsAt + 4096 + DIRENT.nameoff), 8);
  t.is(blob.toString('latin1', dirsAt + 4096 + 8, dirsAt + 4096 + 257), names(16, 249)[15]);
  // Readdir positions: chunk 0 entries at 2 + k * 8, the last entry of /over at 2 + 4096.
  const overIno = r.resolvePath('/over');
  const ents = [...r.readdir(overIno, 0)].slice(2);
  t.deepEqual(ents.map((e) => e.name), names(16, 249));
  t.deepEqual(ents.map((e) => e.nextPos), [...Array.from({ length: 14 }, (_, k) => 2 + (k + 1) * 8), 2 + 4096, 2 + 8192]);
  const exactIno = r.resolvePath('/exact');
  t.deepEqual([...r.readdir(exactIno, 0)].slice(2).map((e) => e.nextPos), [...Array.from({ length: 15 }, (_, k) => 2 + (k + 1) * 8), 2 + 4096]);
  for (const p of ['/exact', '/over', '/under']) {
    const ino = r.resolvePath(p);
    checkEveryPosition(t, r, ino);
    for (const n of [...r.readdir(ino)].map((e) => e.name)) {
      t.not(r.lookup(ino, n), undefined, `${p}/${n}`);
      t.is(r.lookup(ino, n + '\x01'), undefined);
      t.is(r.lookup(ino, n.slice(0, -1)), undefined);
    }
  }
});

test('dirpack vector: chunk ends, page starts, lookups and readdir across chunks', (t) => {
  const { blob } = vectorByName.get('dirpack');
  const placed = checkDirPlacement(blob);
  const r = open(blob);
  const dirs = r.header.sections[SectionId.DIRS];
  const at = (p) => r.inode(r.resolvePath(p));
  t.is(at('/a-exact').payloadLen, 4096);
  t.is(at('/b-over').payloadLen, 4096 + 257);
  t.is(at('/c-full').payloadLen, 4096 + 2 * 256);
  // /c-full's chunk 0 is full to the last byte: 16 entries of 256 bytes, no padding.
  const cFull = at('/c-full');
  t.is(blob.readUInt16LE(dirs.offset + cFull.payload + DIRENT.nameoff), 16 * 8);
  t.is(blob[dirs.offset + cFull.payload + 4095], 'x'.charCodeAt(0));
  // Small directories are packed in /c-full's last page, right after it.
  const afterFull = placed.find(([, p]) => p === cFull.payload + cFull.payloadLen);
  t.truthy(afterFull, 'a small directory starts right where /c-full ends');
  // The byte after a directory's data is often the next directory's first dirent (not zero):
  // readers must end the last name at the chunk end.
  let adjacent = 0;
  for (let k = 1; k < placed.length; k++) {
    const [, p, len] = placed[k - 1];
    if (placed[k][1] === p + len && blob[dirs.offset + p + len] !== 0) adjacent++;
  }
  t.true(adjacent > 100, `${adjacent} directories are followed directly by non-zero bytes`);
  t.true(placed.filter(([, p], k) => k > 0 && p % 4096 === 0 && p !== placed[k - 1][1] + placed[k - 1][2]).length >= 5);
  // Every directory: readdir from every position, lookups of every name and of neighbours.
  const all = [...r.walk()].filter((e) => e.inode.type === 'dir');
  t.is(all.length, 304);
  for (const { ino, path } of all) {
    const names = [...r.readdir(ino)].map((e) => e.name);
    t.deepEqual(names, [...names].sort(), path);
    if (ino === 0 || path < '/p020') checkEveryPosition(t, r, ino);
    for (const n of names) {
      t.not(r.lookup(ino, n), undefined, `${path}/${n}`);
      t.is(r.lookup(ino, n + '\x01'), undefined);
    }
  }
  // Lookups at chunk edges of /b-over and /c-full.
  for (const p of ['/b-over', '/c-full']) {
    const ino = r.resolvePath(p);
    const names = [...r.readdir(ino)].map((e) => e.name);
    const chunkStarts = [...r.readdir(ino)].map((e, k, a) => (k === 0 ? 2 : a[k - 1].nextPos));
    const firstOfChunk1 = names[chunkStarts.indexOf(2 + 4096)];
    t.truthy(firstOfChunk1, `${p} has an entry at 2 + 4096`);
    t.is(r.lookup(ino, firstOfChunk1), r.resolvePath(`${p}/${firstOfChunk1}`));
    t.is(r.readdir(ino, 2 + 4096).next().value.name, firstOfChunk1);
    t.is(r.readdir(ino, 2 + 4096 - 8).next().value.name, firstOfChunk1, 'a position past the last entry of chunk 0 resumes in chunk 1');
    t.true(r.readdir(ino, 2 + 8192).next().done);
  }
});

// ---------------------------------------------------------------------------------------------
// corruption

test('corruption: every flipped header byte is rejected by openBlob', (t) => {
  for (const name of ['small', 'empty-root']) {
    const blob = vectorByName.get(name).blob;
    for (let i = 0; i < 512; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const c = Buffer.from(blob);
        c[i] ^= mask;
        t.throws(() => open(c), { instanceOf: BlobError }, `${name} byte ${i} ^ ${mask}`);
      }
    }
  }
});

test('corruption: truncated or extended blobs are rejected', (t) => {
  for (const name of VECTOR_NAMES) {
    const blob = vectorByName.get(name).blob;
    const r = open(blob);
    const cuts = new Set([0, 1, 8, 511, 512, 4095, 4096, 4097, blob.length - 1, blob.length - 4096]);
    for (const s of r.header.sections) {
      for (const at of [s.offset, s.offset + s.size, s.offset + Math.floor(s.size / 2), s.offset + 4096, s.offset - 1]) cuts.add(at);
    }
    for (const at of cuts) {
      if (at < 0 || at >= blob.length) continue;
      t.throws(() => open(blob.subarray(0, at)), { instanceOf: BlobError }, `${name} cut at ${at}`);
    }
    t.throws(() => open(Buffer.concat([blob, Buffer.alloc(4096)])), { instanceOf: BlobError, message: /differs from the file size/ });
  }
});

test('header: the version is read before the crc (v1 with a stale crc: rebuild; v0: corrupt)', (t) => {
  const base = vectorByName.get('small').blob;
  const v1 = Buffer.from(base);
  v1.writeUInt16LE(1, HDR.versionMajor); // header crc left as sealed for version 2
  t.throws(() => open(v1), { instanceOf: BlobError, message: 'format version 1: rebuild the blob with this cfs (it reads version 2)' });
  const v0 = Buffer.from(base);
  v0.writeUInt16LE(0, HDR.versionMajor);
  fixHeaderCrc(v0);
  t.throws(() => open(v0), { instanceOf: BlobError, message: 'corrupt blob: version_major 0' });
});

test('corruption: header field checks (with a valid header CRC)', (t) => {
  const base = vectorByName.get('small').blob;
  const r = open(base);
  const s = r.header.sections;
  const check = (label, edit, re) => {
    const c = Buffer.from(base);
    edit(c);
    fixHeaderCrc(c);
    const e = t.throws(() => open(c), { instanceOf: BlobError }, label);
    if (e && re) t.regex(e.message, re, label);
  };
  check('magic', (c) => c.write('UNIONBLX', 0, 'latin1'), /bad magic/);
  check('version', (c) => c.writeUInt16LE(3, HDR.versionMajor), /^format version 3: this cfs is too old for it \(it reads version 2\)$/);
  check('version 1', (c) => c.writeUInt16LE(1, HDR.versionMajor), /^format version 1: rebuild the blob with this cfs \(it reads version 2\)$/);
  check('header size', (c) => c.writeUInt32LE(256, HDR.headerSize), /header_size/);
  check('block size', (c) => c.writeUInt32LE(13, HDR.blockSizeLog2), /block_size_log2/);
  check('incompat', (c) => c.writeUInt32LE(0x80, HDR.featureIncompat), /incompatible features/);
  check('blob size', (c) => c.writeUInt32LE(base.length + 4096, HDR.blobSize), /blob_size/);
  check('blob size high', (c) => c.writeUInt32LE(1, HDR.blobSize + 4), /blob_size/);
  check('threshold', (c) => c.writeUInt32LE(4097, HDR.inlineThreshold), /inline_threshold/);
  check('root', (c) => c.writeUInt32LE(r.header.inodeCount, HDR.rootIno), /root_ino/);
  check('root not dir', (c) => c.writeUInt32LE(r.resolvePath('/empty'), HDR.rootIno), /root inode is not a directory/);
  check('inode count', (c) => c.writeUInt32LE(r.header.inodeCount + 1, HDR.inodeCount), /inode_count/);
  check('misaligned', (c) => c.writeUInt32LE(s[1].offset + 8, sectionEntry(1) + SEC.offset), /not page-aligned/);
  check('over header', (c) => c.writeUInt32LE(0, sectionEntry(0) + SEC.offset), /overlaps the header/);
  check('past end', (c) => c.writeUInt32LE(s[5].offset + 8192 * 4, sectionEntry(5) + SEC.size), /past the end/);
  check('overlap', (c) => c.writeUInt32LE(s[0].offset, sectionEntry(1) + SEC.offset), /overlaps the previous/);
  check('order', (c) => {
    c.writeUInt32LE(s[2].offset, sectionEntry(1) + SEC.offset);
    c.writeUInt32LE(s[1].offset, sectionEntry(2) + SEC.offset);
  }, /overlaps the previous|past the end/);
  check('inode size', (c) => c.writeUInt32LE(s[0].size - INODE_SIZE, sectionEntry(0) + SEC.size), /INODES size/);
  check('inode size with page padding', (c) => c.writeUInt32LE(s[0].size + 16, sectionEntry(0) + SEC.size), /INODES size/);
  // DIRS is sized in bytes: a DIRS.size too small for the root's data is caught when the root is read.
  check('dirs size', (c) => c.writeUInt32LE(r.inode(0).payloadLen - 1, sectionEntry(1) + SEC.size), /inode 0: directory data outside DIRS/);
  check('digests count', (c) => c.writeUInt32LE(s[3].count + 1, sectionEntry(3) + SEC.count), /DIGESTS size/);
  check('xindex count', (c) => c.writeUInt32LE(s[4].count + 1, sectionEntry(4) + SEC.count), /XATTR_INDEX size/);
  check('slot 6', (c) => c.writeUInt8(1, sectionEntry(6) + 3), /slot 6/);
  check('slot 11', (c) => c.writeUInt8(1, sectionEntry(11) + 31), /slot 11/);
  // Accepted: an empty section at offset 0; minor version and compat bits are ignored.
  const ok = (label, edit) => {
    const c = Buffer.from(base);
    edit(c);
    fixHeaderCrc(c);
    t.notThrows(() => dumpBlob(open(c)), label);
  };
  const empty = vectorByName.get('empty-root').blob;
  t.notThrows(() => {
    const c = Buffer.from(empty);
    for (const id of [1, 2, 3, 4, 5]) c.writeUInt32LE(0, sectionEntry(id) + SEC.offset);
    dumpBlob(open(fixHeaderCrc(c)));
  });
  ok('minor', (c) => c.writeUInt16LE(7, HDR.versionMinor));
  // DIRS.count (number of non-empty directories) is informational: no size == count * N check.
  ok('dirs count', (c) => c.writeUInt32LE(s[1].count + 1, sectionEntry(1) + SEC.count));
  t.not(s[1].size % 4096, 0, 'the vector has a DIRS size that is not a multiple of 4096');
  ok('compat', (c) => c.writeUInt32LE(0xffffffff, HDR.featureCompat));
  ok('ro_compat', (c) => c.writeUInt32LE(0xffffffff, HDR.featureRoCompat));
});

test('corruption: section CRCs name the broken section', (t) => {
  const base = vectorByName.get('small').blob;
  const r = open(base);
  for (let id = 0; id < 6; id++) {
    const s = r.header.sections[id];
    if (s.size === 0) continue;
    const c = Buffer.from(base);
    c[s.offset + Math.floor(s.size / 2)] ^= 0x10;
    const e = t.throws(() => open(c).checkSections(), { instanceOf: BlobError });
    t.regex(e.message, new RegExp(`${['INODES', 'DIRS', 'DATA', 'DIGESTS', 'XATTR_INDEX', 'XATTR_DATA'][id]} checksum mismatch`));
  }
});

test('corruption: targeted inode, dirent and xattr damage', (t) => {
  const base = vectorByName.get('small').blob;
  const r0 = open(base);
  const s = r0.header.sections;
  const inodeAt = (i) => s[SectionId.INODES].offset + inodeOffset(i);
  const expectWalkError = (label, edit, re) => {
    const c = Buffer.from(base);
    edit(c);
    const e = t.throws(() => dumpBlob(open(c)), { instanceOf: BlobError }, label);
    if (e && re) t.regex(e.message, re, label);
  };
  const ino = (p) => r0.resolvePath(p);
  expectWalkError('layout', (c) => (c[inodeAt(ino('/etc/hostname')) + INO.layout] = Layout.DIR), /invalid for a regular file/);
  expectWalkError('mode', (c) => c.writeUInt16LE(0o644, inodeAt(ino('/etc/hostname')) + INO.mode), /invalid mode/);
  expectWalkError('dtype mismatch', (c) => c.writeUInt16LE(S_IFIFO | 0o644, inodeAt(ino('/empty')) + INO.mode), /file type of dirent/);
  expectWalkError('reserved', (c) => (c[inodeAt(ino('/etc/hostname')) + INO.reserved] = 1), /reserved byte/);
  expectWalkError('nsec', (c) => {
    const at = inodeAt(ino('/etc/hostname')) + INO.mtime + 4;
    c.writeUInt32LE((c.readUInt32LE(at) & 3) + 1e9 * 4, at);
  }, /mtime nanoseconds 1000000000/);
  expectWalkError('inline past DATA', (c) => c.writeUInt32LE(s[SectionId.DATA].size, inodeAt(ino('/etc/hostname')) + INO.payload), /outside DATA/);
  expectWalkError('inline across page', (c) => c.writeUInt32LE(4090, inodeAt(ino('/etc/hostname')) + INO.payload), /crosses a page/);
  expectWalkError('digest index', (c) => c.writeUInt32LE(99, inodeAt(ino('/etc/passwd')) + INO.payload), /digest index/);
  expectWalkError('xattr set', (c) => c.writeUInt32LE(99, inodeAt(ino('/etc/passwd')) + INO.xattrSet), /xattr_set/);
  expectWalkError('dir size of 4 GiB', (c) => c.writeUInt32LE(1, inodeAt(ino('/etc')) + INO.size + 4), /directory of 4294967\d+ bytes/);
  expectWalkError('parent', (c) => c.writeUInt32LE(ino('/etc'), inodeAt(ino('/bin')) + INO.aux), /has parent/);
  expectWalkError('symlink NUL', (c) => {
    const n = r0.inode(ino('/etc/link-to-hostname'));
    c[s[SectionId.DATA].offset + n.payload + 1] = 0;
  }, /NUL/);
  // A cycle: /etc's dirent for hostname... easier: point a dirent of a subdirectory at the root.
  expectWalkError('cycle', (c) => {
    const bin = r0.inode(ino('/names')); // /names has no subdirs; point its first entry at /etc (a dir)
    const chunkAt = s[SectionId.DIRS].offset + bin.payload;
    c.writeUInt32LE(ino('/etc'), chunkAt + DIRENT.ino);
    c[chunkAt + DIRENT.fileType] = DT.DIR;
  }, /reached twice|has parent/);
  expectWalkError('cycle to root', (c) => {
    const names = r0.inode(ino('/names'));
    const chunkAt = s[SectionId.DIRS].offset + names.payload;
    c.writeUInt32LE(0, chunkAt + DIRENT.ino);
    c[chunkAt + DIRENT.fileType] = DT.DIR;
  }, /reached twice/);
  expectWalkError('dirent nameoff', (c) => {
    const chunkAt = s[SectionId.DIRS].offset + r0.inode(0).payload;
    c.writeUInt16LE(3, chunkAt + DIRENT.nameoff);
  }, /first nameoff/);
  expectWalkError('dirent order', (c) => {
    const chunkAt = s[SectionId.DIRS].offset + r0.inode(0).payload;
    const off = c.readUInt16LE(chunkAt + DIRENT.nameoff);
    c[chunkAt + off] = 'z'.charCodeAt(0); // "bin" -> "zin" sorts after "dev"
  }, /increasing order/);
  expectWalkError('dirent ino', (c) => {
    const chunkAt = s[SectionId.DIRS].offset + r0.inode(0).payload;
    c.writeUInt32LE(1e6, chunkAt + DIRENT.ino);
  }, /inode out of range/);
  expectWalkError('dirent dtype', (c) => {
    const chunkAt = s[SectionId.DIRS].offset + r0.inode(0).payload;
    c[chunkAt + DIRENT.fileType] = 3;
  }, /invalid file type/);
  expectWalkError('xattr count', (c) => c.writeUInt16LE(2, s[SectionId.XATTR_INDEX].offset + XSET.count), /outside the set|fill the set/);
  expectWalkError('xattr size', (c) => c.writeUInt32LE(1 << 30, s[SectionId.XATTR_INDEX].offset + XSET.size), /outside XATTR_DATA/);
  expectWalkError('xattr prefix', (c) => (c[s[SectionId.XATTR_DATA].offset] = 9), /unknown prefix/);
  // lookup on a hostile chunk must not misbehave either.
  const c = Buffer.from(base);
  const chunkAt = s[SectionId.DIRS].offset + r0.inode(0).payload;
  c.writeUInt16LE(4090, chunkAt + DIRENT_SIZE + DIRENT.nameoff);
  t.throws(() => open(c).lookup(0, 'etc'), { instanceOf: BlobError });
});

test('corruption: directory placement and chunk rules (SPEC §4, §5)', (t) => {
  const base = vectorByName.get('dirpack').blob;
  const r0 = open(base);
  const s = r0.header.sections;
  const dirs = s[SectionId.DIRS];
  const inodeAt = (i) => s[SectionId.INODES].offset + inodeOffset(i);
  const ino = (p) => r0.resolvePath(p);
  /** Set a directory's size, which is its data length in DIRS. */
  const setLen = (c, i, len) => c.writeUInt32LE(len, inodeAt(i) + INO.size);
  const expectError = (label, edit, re, f = (r) => dumpBlob(r)) => {
    const c = Buffer.from(base);
    edit(c);
    const e = t.throws(() => f(open(c)), { instanceOf: BlobError }, label);
    if (e && re) t.regex(e.message, re, label);
  };
  // Small directories of the vector: [ino, payload, len, entry count].
  const small = [];
  for (const { ino: i, inode } of r0.walk()) {
    if (inode.type === 'dir' && inode.payloadLen > 0 && inode.payloadLen < 1000 && i !== 0) {
      small.push([i, inode.payload, inode.payloadLen, [...r0.readdir(i)].length]);
    }
  }
  const two = small.find(([, , , n]) => n >= 2);
  const one = small.find(([i, , , n]) => n === 1 && [...r0.readdir(i)][0].name.length >= 3);
  const p000 = ino('/p000');
  const bOver = ino('/b-over');
  const pn = r0.inode(p000);

  // §4: where a directory's data may be.
  expectError('past DIRS.size', (c) => c.writeUInt32LE(dirs.size - pn.payloadLen + 1, inodeAt(p000) + INO.payload), /directory data outside DIRS/);
  expectError('len past DIRS.size', (c) => setLen(c, bOver, dirs.size), /directory data outside DIRS/);
  expectError('small crosses a page', (c) => c.writeUInt32LE(8192 - 50, inodeAt(p000) + INO.payload), /inode \d+: directory data crosses a page/);
  expectError('4096 bytes not on a page', (c) => c.writeUInt32LE(4100, inodeAt(ino('/a-exact')) + INO.payload), /crosses a page/);
  expectError('large not on a page', (c) => c.writeUInt32LE(8192 + 8, inodeAt(bOver) + INO.payload), /more than 4096 bytes does not start on a page/);
  expectError('large grows past a page start', (c) => setLen(c, p000, 4097), /does not start on a page/);
  expectError('empty dir with payload', (c) => c.writeUInt32LE(8, inodeAt(ino('/p001')) + INO.payload), /empty directory with a payload offset/);
  expectError('payload high word', (c) => c.writeUInt32LE(1, inodeAt(p000) + INO.payload + 4), /outside DIRS/);

  // §5: chunk rules, on readdir and on lookup.
  for (const [label, f] of [['readdir', (r) => dumpBlob(r)], ['lookup', (r) => r.lookup(p000, 'zzzz')]]) {
    expectError(`${label}: chunk of 8 bytes`, (c) => setLen(c, p000, 8), /chunk 0: chunk of 8 bytes is too short/, f);
    expectError(`${label}: chunk of 1 byte`, (c) => setLen(c, p000, 1), /too short/, f);
  }
  expectError('last chunk of 8 bytes', (c) => setLen(c, bOver, 4096 + 8), /chunk 1: chunk of 8 bytes is too short/);
  expectError('last chunk of 8 bytes (lookup)', (c) => setLen(c, bOver, 4096 + 8), /chunk 1: chunk of 8 bytes is too short/,
    (r) => r.lookup(bOver, '99'));
  expectError('first nameoff == chunk length', (c) => setLen(c, two[0], two[3] * 8), /invalid first nameoff/);
  expectError('first nameoff past chunk length', (c) => setLen(c, two[0], 9), /invalid first nameoff/);
  expectError('nameoff == chunk length', (c) => c.writeUInt16LE(two[2], dirs.offset + two[1] + DIRENT_SIZE + DIRENT.nameoff),
    /entry 1 outside the names area|entry 0 has a name of \d+ bytes/);
  expectError('nameoff into the zero padding of a chunk', (c) => {
    const at = dirs.offset + r0.inode(bOver).payload; // chunk 0 of /b-over: 15 entries in 3840 bytes, then zeros
    c.writeUInt16LE(3900, at + 14 * DIRENT_SIZE + DIRENT.nameoff);
  }, /chunk 0: entry 13 has a name of 556 bytes/);
  expectError('last name in the zero padding of a chunk', (c) => {
    const at = dirs.offset + r0.inode(bOver).payload;
    c.writeUInt16LE(3840, at + 14 * DIRENT_SIZE + DIRENT.nameoff); // entry 13 grows by 248, entry 14 starts at a zero
  }, /chunk 0: entry 1[34] has a name of (496|0) bytes/);
  expectError('nameoff past the chunk of a small directory', (c) => {
    const [, payload, len] = two;
    c.writeUInt16LE(len + 1, dirs.offset + payload + DIRENT_SIZE + DIRENT.nameoff);
  }, /entry 1 outside the names area|entry 0 has a name of \d+ bytes|nameoffs not increasing/);
  expectError('names not increasing across chunks', (c) => {
    const at = dirs.offset + r0.inode(bOver).payload + 4096;
    c[at + c.readUInt16LE(at + DIRENT.nameoff)] = '0'.charCodeAt(0); // "15xx..." -> "05xx..." < "14xx..."
  }, /names not increasing across chunks/);

  // Names end at the chunk end: one byte less of directory size drops the last name's last byte,
  // even when the byte after the directory is not zero.
  {
    const [i, payload, len] = two;
    const c = Buffer.from(base);
    c[dirs.offset + payload + len] ||= 0x41; // make sure the next byte is not a terminator
    setLen(c, i, len - 1);
    const r = open(c);
    const before = [...r0.readdir(i)].map((e) => e.name);
    const after = [...r.readdir(i)].map((e) => e.name);
    t.deepEqual(after, [...before.slice(0, -1), before.at(-1).slice(0, -1)]);
    t.is(r.lookup(i, before.at(-1)), undefined);
    t.is(r.lookup(i, after.at(-1)), r0.lookup(i, before.at(-1)));
  }
  // ... or at the first zero byte before it.
  {
    const [i, payload] = one;
    const c = Buffer.from(base);
    c[dirs.offset + payload + DIRENT_SIZE + 2] = 0;
    const r = open(c);
    const name = [...r0.readdir(i)][0].name;
    t.deepEqual([...r.readdir(i)].map((e) => e.name), [name.slice(0, 2)]);
    t.is(r.lookup(i, name.slice(0, 2)), r0.lookup(i, name));
  }
  // Accepted: a larger DIRS.size and any DIRS.count (neither is tied to the directories).
  for (const edit of [(c) => c.writeUInt32LE(dirs.size + 100, sectionEntry(SectionId.DIRS) + SEC.size),
    (c) => c.writeUInt32LE(7, sectionEntry(SectionId.DIRS) + SEC.count)]) {
    const c = Buffer.from(base);
    edit(c);
    t.is(dumpBlob(open(fixHeaderCrc(c))), vectorByName.get('dirpack').dump);
  }
});

function allPaths(blob) {
  return [...open(blob).walk()].map((e) => e.path);
}

for (const [name, cases] of [['small', 1000], ['bigdir', 150], ['deep', 150], ['dirpack', 150]]) {
  test(`corruption: ${cases} random section flips in ${name} give BlobError or success`, (t) => {
    const base = vectorByName.get(name).blob;
    const paths = allPaths(base);
    const rand = prng(0xc0ffee + name.length);
    // Flip bytes of section contents (padding is never read, so flips there prove nothing).
    const contentBytes = [];
    for (const s of open(base).header.sections) if (s.size > 0) contentBytes.push([s.offset, s.size]);
    const total = contentBytes.reduce((n, [, size]) => n + size, 0);
    const pick = () => {
      let x = Math.floor(rand() * total);
      for (const [offset, size] of contentBytes) {
        if (x < size) return offset + x;
        x -= size;
      }
      throw new Error('unreachable');
    };
    const tally = { ok: 0, rejected: 0, bad: 0 };
    for (let k = 0; k < cases; k++) {
      const c = Buffer.from(base);
      const flips = 1 + Math.floor(rand() * 4);
      const where = [];
      for (let f = 0; f < flips; f++) {
        const at = pick();
        const r = rand();
        c[at] = r < 0.5 ? c[at] ^ (1 << Math.floor(rand() * 8)) : r < 0.75 ? Math.floor(rand() * 256) : r < 0.9 ? 0 : 0xff;
        where.push(at);
      }
      tally[expectBlobErrorOrSuccess(t, `${name} case ${k} (flips at ${where})`, () => exerciseReader(c, paths))]++;
      if (tally.bad > 5) return;
    }
    t.log(`${name}: ${JSON.stringify(tally)}`);
    t.true(tally.rejected > 0);
  });
}

test('corruption: random header fields with a valid CRC give BlobError or success', (t) => {
  const base = vectorByName.get('small').blob;
  const rand = prng(7);
  for (let k = 0; k < 500; k++) {
    const c = Buffer.from(base);
    const flips = 1 + Math.floor(rand() * 3);
    for (let f = 0; f < flips; f++) {
      const at = 12 + Math.floor(rand() * (128 + 6 * 32 - 12));
      c[at] = rand() < 0.5 ? c[at] ^ (1 << Math.floor(rand() * 8)) : Math.floor(rand() * 256);
    }
    fixHeaderCrc(c);
    expectBlobErrorOrSuccess(t, `header case ${k}`, () => exerciseReader(c));
  }
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// property: random trees round-trip

const nameArb = fc
  .oneof(
    { weight: 8, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 12 }) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 200, maxLength: 255 }) },
  )
  .map((bytes) => Buffer.from(bytes.map((b) => (b === 0 || b === 0x2f ? 0x41 + (b % 26) : b))).toString('latin1'))
  .filter((n) => n !== '.' && n !== '..');

const xattrNameArb = fc
  .tuple(fc.constantFrom('', 'user.', 'trusted.', 'security.', 'system.posix_acl_access', 'system.posix_acl_default', 'trusted.overlay.'),
    fc.uint8Array({ minLength: 0, maxLength: 10 }))
  .map(([p, s]) => p + Buffer.from(s.map((b) => b || 1)).toString('latin1'))
  .filter((n) => n.length >= 1 && n.length <= 255);

const metaArb = fc.record({
  perm: fc.integer({ min: 0, max: 0o7777 }),
  uid: fc.oneof(fc.constantFrom(0, 65534, 4294967295), fc.nat({ max: 4294967295 })),
  gid: fc.oneof(fc.constantFrom(0, 65536), fc.nat({ max: 4294967295 })),
  mtimeSec: fc.oneof(fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), fc.constantFrom(0, -1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER)),
  mtimeNsec: fc.integer({ min: 0, max: 999_999_999 }),
  xattrs: fc.uniqueArray(fc.tuple(xattrNameArb, fc.uint8Array({ maxLength: 40 })), { selector: ([k]) => k, maxLength: 4 })
    .map((es) => new Map(es.map(([k, v]) => [k, Buffer.from(v)]))),
});

const leafArb = fc.tuple(
  metaArb,
  fc.oneof(
    fc.constant({ kind: 'empty' }),
    fc.uint8Array({ minLength: 1, maxLength: 100 }).map((b) => ({ kind: 'inline', data: Buffer.from(b) })),
    fc.uint8Array({ minLength: 3000, maxLength: 4096 }).map((b) => ({ kind: 'inline', data: Buffer.from(b) })),
    fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.integer({ min: 1, max: 2 ** 45 }))
      .map(([d, size]) => ({ kind: 'ext', digest: Buffer.from(d), size })),
    fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 60 }), fc.uint8Array({ minLength: 4095, maxLength: 4095 }))
      .map((b) => ({ kind: 'lnk', target: Buffer.from(b.map((x) => x || 1)).toString('latin1') })),
    fc.tuple(fc.constantFrom(S_IFCHR, S_IFBLK), fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 0, max: 0xfffff }))
      .map(([type, major, minor]) => ({ kind: 'dev', type, major, minor })),
    fc.constantFrom({ kind: 'fifo' }, { kind: 'sock' }),
  ),
).map(([m, k]) => {
  const base = { uid: m.uid, gid: m.gid, mtimeSec: m.mtimeSec, mtimeNsec: m.mtimeNsec, xattrs: m.xattrs, size: 0 };
  switch (k.kind) {
    case 'empty': return { ...base, mode: S_IFREG | m.perm };
    case 'inline': return { ...base, mode: S_IFREG | m.perm, size: k.data.length, inline: k.data };
    case 'ext': return { ...base, mode: S_IFREG | m.perm, size: k.size, digest: k.digest };
    case 'lnk': return { ...base, mode: S_IFLNK | 0o777, size: k.target.length, target: k.target };
    case 'dev': return { ...base, mode: k.type | m.perm, rdevMajor: k.major, rdevMinor: k.minor };
    case 'fifo': return { ...base, mode: S_IFIFO | m.perm };
    default: return { ...base, mode: S_IFSOCK | m.perm };
  }
});

const { tree: treeArb } = fc.letrec((tie) => ({
  tree: fc.tuple(metaArb, fc.uniqueArray(fc.tuple(nameArb, tie('child')), { selector: ([n]) => n, maxLength: 6 }))
    .map(([m, entries]) => ({
      mode: S_IFDIR | m.perm, uid: m.uid, gid: m.gid, mtimeSec: m.mtimeSec, mtimeNsec: m.mtimeNsec, xattrs: m.xattrs, size: 0,
      children: new Map(entries),
    })),
  child: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leafArb, tie('tree')),
}));

/** Add hardlinks: existing non-directories under extra names in random directories. */
function addHardlinks(root, links) {
  const dirs = [];
  const files = [];
  const stack = [root];
  while (stack.length) {
    const d = stack.pop();
    dirs.push(d);
    for (const c of d.children.values()) ((c.mode & S_IFMT) === S_IFDIR ? stack.push(c) : files.push(c));
  }
  if (files.length === 0) return root;
  for (const [a, b, name] of links) {
    const d = dirs[a % dirs.length];
    if (!d.children.has(name)) d.children.set(name, files[b % files.length]);
  }
  return root;
}

test('property: random trees round-trip (encode -> decodeTree -> encode)', (t) => {
  fc.assert(
    fc.property(treeArb, fc.array(fc.tuple(fc.nat(), fc.nat(), nameArb), { maxLength: 6 }), (tree, links) => {
      const input = addHardlinks(tree, links);
      const blob = encodeBlob(input, { inlineThreshold: 4096 });
      const r = open(blob);
      r.checkSections();
      checkDirPlacement(blob);
      const decoded = decodeTree(r);
      assert.deepEqual(canon(decoded), canon(input));
      assert.ok(encodeBlob(decoded, { inlineThreshold: 4096 }).equals(blob), 're-encoding differs');
      const dump = dumpBlob(r);
      assert.equal(dump.split('\n').length - 2, 1 + r.header.direntCount);
      for (const e of r.walk()) assert.equal(r.resolvePath(e.path), e.ino);
    }),
    { numRuns: 300, seed: 20240601 },
  );
  t.pass();
});

// ---------------------------------------------------------------------------------------------
// property: any mutation of any blob is rejected with a one-line BlobError or decodes to a
// valid tree (one that encodes again and round-trips), never another exception or a hang

const mutationArb = fc.oneof(
  // a byte anywhere (content, padding, header)
  fc.record({ kind: fc.constant('byte'), at: fc.nat(), value: fc.nat({ max: 255 }) }),
  // a bit flip anywhere
  fc.record({ kind: fc.constant('flip'), at: fc.nat(), value: fc.nat({ max: 7 }) }),
  // a 32-bit little-endian word of the header + section table (offsets, sizes, counts)
  fc.record({ kind: fc.constant('word'), at: fc.nat({ max: 127 }), value: fc.oneof(fc.nat(), fc.constantFrom(0, 1, 4095, 4096, 0xffffffff)) }),
  fc.record({ kind: fc.constant('truncate'), at: fc.nat(), value: fc.constant(0) }),
);

function mutate(blob, mutations, fixCrc) {
  let c = Buffer.from(blob);
  const headerWords = (SECTION_TABLE_OFFSET + 12 * SECTION_ENTRY_SIZE - 12) >> 2;
  for (const m of mutations) {
    const word = 12 + 4 * (m.at % headerWords);
    if (m.kind === 'truncate') c = Buffer.from(c.subarray(0, m.at % (c.length + 1)));
    else if (c.length === 0) continue;
    else if (m.kind === 'byte') c[m.at % c.length] = m.value;
    else if (m.kind === 'flip') c[m.at % c.length] ^= 1 << m.value;
    else if (word + 4 <= c.length) c.writeUInt32LE(m.value >>> 0, word);
  }
  return fixCrc && c.length >= 512 ? fixHeaderCrc(c) : c;
}

/** 'ok' or 'rejected'; throws (failing the property) on anything else or a slow case. */
function readerOutcome(blob) {
  const start = performance.now();
  try {
    exerciseReader(blob);
    const decoded = decodeTree(open(blob));
    // what decodes must be a valid tree: it encodes and round-trips
    const again = encodeBlob(decoded, { inlineThreshold: 4096 });
    assert.deepEqual(canon(decodeTree(open(again))), canon(decoded));
    return 'ok';
  } catch (e) {
    if (!(e instanceof BlobError)) throw e;
    assert.match(e.message, /^(corrupt blob|format version \d+): [^\n]+$/);
    return 'rejected';
  } finally {
    assert.ok(performance.now() - start < 5000, 'reader took over 5 s');
  }
}

test('property: any mutation of a random blob gives BlobError or a valid tree', (t) => {
  const tally = { ok: 0, rejected: 0 };
  fc.assert(
    fc.property(treeArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.boolean(), (tree, mutations, fixCrc) => {
      tally[readerOutcome(mutate(encodeBlob(tree, { inlineThreshold: 4096 }), mutations, fixCrc))]++;
    }),
    { numRuns: 400, seed: 20241122 },
  );
  t.log(JSON.stringify(tally));
  t.true(tally.ok > 0 && tally.rejected > 0, 'both outcomes occur');
});

test('digestsHex lists DIGESTS in index order as digest(k) does, across its read chunks (file source)', (t) => {
  // 70,000 distinct digests: three chunks of the generator's 32,768-digest reads, the last partial
  const files = [];
  for (let k = 0; k < 70000; k++) files.push([`f${k}`, extNode(100, `content ${k}`)]);
  const blob = encodeBlob(dirNode([['d', dirNode(files)]]));
  const dir = mkdtempSync(join(tmpdir(), 'ub-digests-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'b.ub'), blob);
  const src = sourceFromFile(join(dir, 'b.ub'));
  try {
    const r = openBlob(src);
    const count = r.header.sections[SectionId.DIGESTS].count;
    t.is(count, 70000);
    const got = [...r.digestsHex()];
    t.is(got.length, count);
    for (let k = 0; k < count; k++) if (got[k] !== r.digest(k).toString('hex')) return t.fail(`digest ${k}`);
    const expected = files.map(([, n]) => n.digest.toString('hex')).sort();
    t.deepEqual(got, expected, 'sorted, every file\'s digest once');
  } finally {
    src.close();
  }
});

test('encode: DIGESTS in memcmp order and unique when digests share long prefixes and repeat', (t) => {
  // The encoder sorts by a digest's leading bits first (placeDigests): digests that agree on
  // their first 7..31 bytes, repeated contents and ones differing only in the first bit must
  // still come out in full memcmp order, each once, with every file naming its own.
  const rand = prng(7);
  const digests = [];
  const base = Buffer.alloc(32, 0xa5);
  for (let shared = 5; shared < 32; shared++) {
    for (let v = 0; v < 4; v++) {
      const d = Buffer.from(base);
      d[shared] = (v * 61 + shared) & 0xff;
      for (let b = shared + 1; b < 32; b++) d[b] = Math.floor(rand() * 256);
      digests.push(d);
    }
  }
  for (let k = 0; k < 300; k++) digests.push(Buffer.from(Array.from({ length: 32 }, () => Math.floor(rand() * 256))));
  digests.push(Buffer.alloc(32, 0), Buffer.alloc(32, 0xff), Buffer.concat([Buffer.from([0x80]), Buffer.alloc(31)]));
  const files = [];
  digests.forEach((d, k) => {
    const copies = 1 + (k % 3); // identical contents in several files
    for (let c = 0; c < copies; c++) files.push([`f${k}-${c}`, node(S_IFREG | 0o644, { size: 5000, digest: Buffer.from(d) })]);
  });
  for (let k = files.length - 1; k > 0; k--) {
    const j = Math.floor(rand() * (k + 1));
    [files[k], files[j]] = [files[j], files[k]];
  }
  const r = open(encodeBlob(dirNode([['a', dirNode(files.slice(0, 400))], ['b', dirNode(files.slice(400))]])));
  const stored = [...r.digestsHex()];
  const expected = [...new Set(digests.map((d) => d.toString('hex')))].sort();
  t.deepEqual(stored, expected, 'every distinct digest once, in memcmp order');
  const tree = decodeTree(r);
  let checked = 0;
  for (const [dirName, part] of [['a', files.slice(0, 400)], ['b', files.slice(400)]]) {
    const dir = tree.children.get(dirName);
    for (const [name, n] of part) {
      if (!dir.children.get(name).digest.equals(n.digest)) return t.fail(`${dirName}/${name} names another digest`);
      checked++;
    }
  }
  t.is(checked, files.length);
});
