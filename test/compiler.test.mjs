// Tests of `cfs build` (compiler/build.ts, tar.ts, layers.ts, store.ts, image.ts): synthetic
// layer tars are written here byte by byte (so PAX, GNU and base-256 cases are exact), wrapped
// into docker-archive / oci-archive / OCI-layout images, compiled, and checked through the
// decoder's dump, the returned trees, the store contents and the CLI's exit status.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import crypto from 'node:crypto';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { compress as zstdCompress } from 'zstd-napi';
import { buildImage, buildTree, applyLayerStream, newTree } from '../dist/compiler/build.js';
import { TarReader, walkTarHeaders } from '../dist/compiler/tar.js';
import { StoreWriter, cleanStaleTemps, hashBuffer, hashBufferJs, objectPath } from '../dist/compiler/store.js';
import { nativeBlockHasher, nativeVerityDigest } from '../dist/mounter/addon.js';
import { openBlob, sourceFromBuffer } from '../dist/format/decode.js';
import { dumpBlob } from '../dist/format/dump.js';
import { VerityHasher, verityDigest, verityDigestOfFile } from '../dist/format/verity.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CFS = process.env.CFS_BIN ?? path.join(ROOT, 'bin', 'cfs');

// ------------------------------------------------------------------------------------------
// A tar writer with full control over every header byte.

const ZERO = Buffer.alloc(512);
const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', chr: '3', blk: '4', dir: '5', fifo: '6' };

function writeNumber(b, off, len, v, forceBase256 = false) {
  const fits = v >= 0 && v < 8 ** (len - 1);
  if (fits && !forceBase256) {
    b.write(v.toString(8).padStart(len - 1, '0'), off, len - 1, 'latin1');
    b[off + len - 1] = 0;
    return;
  }
  // base-256, two's complement, big-endian, top bit of the first byte set.
  let x = BigInt(v);
  for (let i = off + len - 1; i > off; i--) {
    b[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  b[off] = v < 0 ? 0xff : 0x80; // marker bit, plus sign extension (the value fits in the other bytes)
}

/** One raw header block (ustar unless `magic` given). Names are binary strings. */
function rawHeader(h) {
  const b = Buffer.alloc(512);
  b.write(h.name ?? '', 0, 100, 'latin1');
  writeNumber(b, 100, 8, h.mode ?? 0o644);
  writeNumber(b, 108, 8, h.uid ?? 0, h.base256);
  writeNumber(b, 116, 8, h.gid ?? 0, h.base256);
  writeNumber(b, 124, 12, h.size ?? 0, h.base256);
  writeNumber(b, 136, 12, h.mtime ?? 0, h.base256);
  b.write(h.typeflag ?? '0', 156, 1, 'latin1');
  b.write(h.linkname ?? '', 157, 100, 'latin1');
  b.write(h.magic ?? 'ustar\x0000', 257, 8, 'latin1');
  writeNumber(b, 329, 8, h.devmajor ?? 0);
  writeNumber(b, 337, 8, h.devminor ?? 0);
  if (h.prefix) b.write(h.prefix, 345, 155, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of b) sum += c;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  if (h.badChecksum) b[148] = 0x37;
  return b;
}

function pad(body) {
  const rem = body.length % 512;
  return rem === 0 ? body : Buffer.concat([body, Buffer.alloc(512 - rem)]);
}

function paxBody(records) {
  const parts = records.map(([k, v]) => {
    const kv = Buffer.concat([Buffer.from(` ${k}=`, 'latin1'), Buffer.isBuffer(v) ? v : Buffer.from(String(v), 'latin1'), Buffer.from('\n')]);
    let len = kv.length + 1;
    while (String(len).length + kv.length !== len) len++;
    return Buffer.concat([Buffer.from(String(len)), kv]);
  });
  return Buffer.concat(parts);
}

function extHeader(typeflag, body, name = 'PaxHeader') {
  return Buffer.concat([rawHeader({ name, typeflag, size: body.length }), pad(body)]);
}

/**
 * Tar bytes of one entry: { path, type, body, mode, uid, gid, mtime, nsec, linkname, devmajor,
 * devminor, xattrs: {name: Buffer}, gnu: true (GNU L/K for long names), pax: [[k, v]...] }.
 * Long names, xattrs, nsec and big ids go into a PAX header unless `gnu`.
 */
function entry(e) {
  const type = e.type ?? 'file';
  const body = type === 'file' ? Buffer.from(e.body ?? '') : Buffer.alloc(0);
  const out = [];
  const pax = [...(e.pax ?? [])];
  let name = e.path;
  let linkname = e.linkname ?? '';
  if (e.gnu) {
    if (name.length > 100) out.push(extHeader('L', Buffer.from(name + '\0', 'latin1'), '././@LongLink'));
    if (linkname.length > 100) out.push(extHeader('K', Buffer.from(linkname + '\0', 'latin1'), '././@LongLink'));
  } else {
    if (name.length > 100 && !e.prefix) pax.push(['path', name]);
    if (linkname.length > 100) pax.push(['linkpath', linkname]);
  }
  for (const [k, v] of Object.entries(e.xattrs ?? {})) pax.push([`SCHILY.xattr.${k}`, v]);
  if (e.nsec !== undefined) pax.push(['mtime', `${e.mtime ?? 0}.${String(e.nsec).padStart(9, '0')}`]);
  if (pax.length) out.push(extHeader('x', paxBody(pax)));
  out.push(
    rawHeader({
      name: e.prefix ? name.slice(e.prefix.length + 1) : name.slice(0, 100),
      prefix: e.prefix,
      typeflag: e.typeflag ?? TYPEFLAG[type],
      mode: e.mode ?? (type === 'dir' ? 0o755 : 0o644),
      uid: e.uid, gid: e.gid, mtime: e.mtime ?? 1_700_000_000,
      size: e.size ?? body.length,
      linkname: linkname.slice(0, 100),
      devmajor: e.devmajor, devminor: e.devminor, base256: e.base256, magic: e.magic, badChecksum: e.badChecksum,
    }),
  );
  out.push(pad(body));
  return Buffer.concat(out);
}

/** A whole tar: entries (objects or raw Buffers), then the two zero blocks. */
function tar(entries, { end = true } = {}) {
  return Buffer.concat([...entries.map((e) => (Buffer.isBuffer(e) ? e : entry(e))), ...(end ? [ZERO, ZERO] : [])]);
}

const dir = (p, extra = {}) => ({ path: p, type: 'dir', ...extra });
const file = (p, body, extra = {}) => ({ path: p, type: 'file', body, ...extra });

function compressWith(kind, buf) {
  if (kind === 'gzip') return zlib.gzipSync(buf);
  if (kind === 'zstd') return zstdCompress(buf);
  return buf;
}

const sha256 = (b) => 'sha256:' + crypto.createHash('sha256').update(b).digest('hex');

// ------------------------------------------------------------------------------------------
// Image writers.

const MT = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

function tmpdir(t) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-build-'));
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function putBlob(layout, buf, mediaType) {
  const digest = sha256(buf);
  const p = path.join(layout, 'blobs', 'sha256', digest.slice(7));
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, buf);
  return { mediaType, digest, size: buf.length };
}

/** Image manifest for uncompressed layer tars; returns its descriptor. */
function putImage(layout, tars, { compression = 'gzip', mediaTypes, platform } = {}) {
  const comps = Array.isArray(compression) ? compression : tars.map(() => compression);
  const layers = tars.map((t, i) => putBlob(layout, compressWith(comps[i], t), mediaTypes?.[i] ?? MT[comps[i]]));
  const config = { architecture: platform?.architecture ?? 'amd64', os: platform?.os ?? 'linux', rootfs: { type: 'layers', diff_ids: tars.map(sha256) } };
  const configDesc = putBlob(layout, Buffer.from(JSON.stringify(config)), 'application/vnd.oci.image.config.v1+json');
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDesc, layers };
  return putBlob(layout, Buffer.from(JSON.stringify(manifest)), manifest.mediaType);
}

function putIndex(layout, manifests) {
  const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests };
  return putBlob(layout, Buffer.from(JSON.stringify(index)), index.mediaType);
}

/** An OCI layout directory whose index.json lists `entries` (descriptors, with ref names). */
function writeLayout(layout, entries) {
  fs.mkdirSync(layout, { recursive: true });
  fs.writeFileSync(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: entries }));
  return layout;
}

const tagged = (desc, tag) => ({ ...desc, annotations: { 'org.opencontainers.image.ref.name': tag } });

function ociLayout(t, tars, opts = {}) {
  const layout = path.join(tmpdir(t), 'layout');
  fs.mkdirSync(layout);
  const desc = putImage(layout, tars, opts);
  return writeLayout(layout, [opts.tag ? tagged(desc, opts.tag) : desc]);
}

/** Pack a directory tree into a tar file (regular files and directories, sorted). */
function packDir(src, out, { dotSlash = false } = {}) {
  const entries = [];
  const walk = (rel) => {
    for (const name of fs.readdirSync(path.join(src, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.statSync(path.join(src, r));
      const p = (dotSlash ? './' : '') + r;
      if (st.isDirectory()) {
        entries.push(dir(p + '/'));
        walk(r);
      } else entries.push(file(p, fs.readFileSync(path.join(src, r))));
    }
  };
  walk('');
  fs.writeFileSync(out, tar(entries));
  return out;
}

function ociArchive(t, tars, opts = {}) {
  const layout = ociLayout(t, tars, opts);
  return packDir(layout, path.join(path.dirname(layout), 'image.oci.tar'), { dotSlash: true });
}

/** docker save layout: manifest.json, config, <id>/layer.tar (uncompressed unless asked). */
function dockerArchive(t, images, { compression = 'none' } = {}) {
  const d = path.join(tmpdir(t), 'docker');
  fs.mkdirSync(d);
  const manifest = images.map(({ tars, repoTags }) => {
    const config = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: tars.map(sha256) } };
    const cbuf = Buffer.from(JSON.stringify(config));
    const cname = sha256(cbuf).slice(7) + '.json';
    fs.writeFileSync(path.join(d, cname), cbuf);
    const layers = tars.map((tb) => {
      const id = sha256(tb).slice(7);
      fs.mkdirSync(path.join(d, id), { recursive: true });
      fs.writeFileSync(path.join(d, id, 'layer.tar'), compressWith(compression, tb));
      return `${id}/layer.tar`;
    });
    return { Config: cname, RepoTags: repoTags ?? [], Layers: layers };
  });
  fs.writeFileSync(path.join(d, 'manifest.json'), JSON.stringify(manifest));
  return packDir(d, path.join(path.dirname(d), 'image.docker.tar'));
}

// ------------------------------------------------------------------------------------------
// Checking results.

/** Parsed SPEC §9 dump: path -> fields. */
function dumpOf(blob) {
  const lines = dumpBlob(openBlob(sourceFromBuffer(blob))).trimEnd().split('\n').slice(1);
  const m = new Map();
  for (const l of lines) {
    const [p, ino, type, perm, uid, gid, nlink, size, mtime, payload, xattrs] = l.split(' ');
    m.set(p, { ino: +ino, type, perm, uid: +uid, gid: +gid, nlink: +nlink, size: +size, mtime, payload, xattrs });
  }
  return m;
}

/** Every object of every store re-hashes to its name; returns the number of objects. */
async function checkStore(t, ...stores) {
  let n = 0;
  for (const s of stores) {
    const od = path.join(s, 'objects');
    if (!fs.existsSync(od)) continue;
    for (const fan of fs.readdirSync(od)) {
      if (fan.startsWith('.tmp-')) continue;
      for (const name of fs.readdirSync(path.join(od, fan))) {
        const digest = (await verityDigestOfFile(path.join(od, fan, name))).toString('hex');
        t.is(digest, fan + name, `object ${fan}/${name} content matches its name`);
        n++;
      }
    }
  }
  return n;
}

function temps(store) {
  const od = path.join(store, 'objects');
  return fs.existsSync(od) ? fs.readdirSync(od).filter((n) => n.startsWith('.tmp-')) : [];
}

/** Apply uncompressed layer tars onto a new tree without a store. */
async function applyAll(tars, inlineThreshold = 64) {
  const root = newTree();
  const stats = { entries: 0 };
  let i = 0;
  for (const tb of tars) {
    await applyLayerStream(root, Readable.from([tb]), { layer: `layer${++i}`, inlineThreshold, store: null, stats });
  }
  return root;
}

function lookup(root, p) {
  let n = root;
  for (const c of p.split('/').filter(Boolean)) {
    n = n.children?.get(c);
    if (!n) return undefined;
  }
  return n;
}

const names = (root, p) => [...lookup(root, p).children.keys()].sort();

/** Run the CLI; resolves { code, stdout, stderr }. */
function cfs(args, opts = {}) {
  const r = spawnSync(process.execPath, [CFS, ...args], { encoding: 'utf8', ...opts });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

async function build(t, image, extra = {}) {
  const d = tmpdir(t);
  const out = path.join(d, 'out.ub');
  const store = extra.store ?? path.join(d, 'store');
  const summary = await buildImage({ image, out, stores: [store], ...extra });
  return { blob: fs.readFileSync(out), summary, store, out };
}


// ==========================================================================================
// Tar reader

test('smoke: one layer through every archive format', async (t) => {
  const layer = tar([dir('etc/'), file('etc/hostname', 'box\n'), file('etc/big', Buffer.alloc(5000, 7))]);
  for (const image of [ociLayout(t, [layer]), ociArchive(t, [layer]), dockerArchive(t, [{ tars: [layer] }])]) {
    const { blob, summary } = await build(t, image);
    const d = dumpOf(blob);
    t.is(d.get('/etc/hostname').payload, 'inline:' + Buffer.from('box\n').toString('hex'));
    t.is(d.get('/etc/big').payload, 'obj:' + verityDigest(Buffer.alloc(5000, 7)).toString('hex'));
    t.is(summary.layers, 1);
  }
});

async function readAllEntries(tarBuf, chunkSizes) {
  // Feed the archive in the given chunk sizes (cycled) to exercise every buffer boundary.
  const chunks = [];
  for (let pos = 0, i = 0; pos < tarBuf.length; i++) {
    const n = chunkSizes ? chunkSizes[i % chunkSizes.length] : tarBuf.length;
    chunks.push(tarBuf.subarray(pos, pos + n));
    pos += n;
  }
  const r = new TarReader(Readable.from(chunks));
  const out = [];
  for (let e; (e = await r.next()); ) out.push({ ...e, body: await r.readBody() });
  return out;
}

test('tar: ustar prefix, PAX path/linkpath/xattrs/ns mtime, GNU L/K, base-256, global header', async (t) => {
  const longName = 'd/' + 'x'.repeat(150) + '/\xff\xfe-not-utf8';
  const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0x00, 0x80, 0xc3, 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const tb = tar([
    { path: 'p'.repeat(120) + '/short', prefix: 'p'.repeat(120), type: 'file', body: 'prefixed' },
    { path: longName, type: 'file', body: 'long', xattrs: { 'security.capability': cap, 'user.\xe9': Buffer.from('v') }, mtime: 1_600_000_000, nsec: 123456789 },
    { path: 'gnu/' + 'g'.repeat(200), type: 'file', gnu: true, body: 'gnu' },
    { path: 'gnu/link', type: 'symlink', gnu: true, linkname: '/target/' + 't'.repeat(300) },
    { path: 'big', type: 'file', uid: 2 ** 32 - 1, gid: 3_000_000_000, size: 3, body: 'big', mtime: 2 ** 40, base256: true },
    { path: 'neg', type: 'file', body: '', mtime: -1, base256: true },
    { path: 'negpax', type: 'file', body: '', pax: [['mtime', '-1.25']] },
    { path: 'lib', type: 'file', body: '', pax: [['LIBARCHIVE.xattr.user.a%3Db', Buffer.from('aGVsbG8=')]] },
    { path: 'dev/null', type: 'chr', devmajor: 1, devminor: 3, mode: 0o666 },
    { path: 'old/', type: 'file', typeflag: '\0', mode: 0o755 },
    // A global header is ignored, as containerd and docker ignore it (git archive writes one).
    extHeader('g', paxBody([['uid', '4242'], ['comment', 'git archive']])),
    file('plain', 'a', { uid: 7 }),
  ]);
  for (const sizes of [undefined, [1], [511, 513, 7], [4096, 3]]) {
    const es = await readAllEntries(tb, sizes);
    const by = new Map(es.map((e) => [e.path, e]));
    t.is(by.get('plain').uid, 7, 'a global PAX uid does not apply');
    t.is(by.get('p'.repeat(120) + '/short').body.toString(), 'prefixed');
    const l = by.get(longName);
    t.truthy(l, 'binary PAX path preserved byte for byte');
    t.deepEqual(l.xattrs.get('security.capability'), cap);
    t.deepEqual(l.xattrs.get('user.\xe9'), Buffer.from('v'));
    t.is(l.mtimeSec, 1_600_000_000);
    t.is(l.mtimeNsec, 123456789);
    t.is(by.get('gnu/' + 'g'.repeat(200)).body.toString(), 'gnu');
    t.is(by.get('gnu/link').linkpath, '/target/' + 't'.repeat(300));
    const b = by.get('big');
    t.is(b.uid, 2 ** 32 - 1);
    t.is(b.gid, 3_000_000_000);
    t.is(b.mtimeSec, 2 ** 40);
    t.is(b.body.toString(), 'big');
    t.is(by.get('neg').mtimeSec, -1);
    t.is(by.get('negpax').mtimeSec, -2);
    t.is(by.get('negpax').mtimeNsec, 750_000_000);
    t.deepEqual(by.get('lib').xattrs.get('user.a=b'), Buffer.from('hello'));
    t.is(by.get('dev/null').type, 'chr');
    t.is(by.get('dev/null').devminor, 3);
    t.is(by.get('old/').type, 'dir');
  }
});

test('tar: archives written by GNU tar (pax and gnu formats) read back', async (t) => {
  const d = tmpdir(t);
  const src = path.join(d, 'src');
  fs.mkdirSync(path.join(src, 'sub', 'x'.repeat(120)), { recursive: true });
  fs.writeFileSync(path.join(src, 'sub', 'x'.repeat(120), 'y'.repeat(120)), 'deep');
  fs.writeFileSync(path.join(src, 'f'), 'content');
  fs.linkSync(path.join(src, 'f'), path.join(src, 'hard'));
  fs.symlinkSync('f', path.join(src, 'sym'));
  spawnSync('mkfifo', [path.join(src, 'fifo')]);
  let xattr = spawnSync('setfattr', ['-n', 'user.test', '-v', '0x00ff01', path.join(src, 'f')]).status === 0;
  for (const format of ['pax', 'gnu']) {
    const out = path.join(d, `${format}.tar`);
    const r = spawnSync('tar', ['--format', format, ...(format === 'pax' && xattr ? ['--xattrs'] : []), '-C', src, '-cf', out, '.'], { encoding: 'utf8' });
    if (r.status !== 0) return t.pass('tar not usable here');
    const es = await readAllEntries(fs.readFileSync(out), [1000]);
    const by = new Map(es.map((e) => [e.path.replace(/^\.\//, '').replace(/\/$/, ''), e]));
    t.is(by.get(`sub/${'x'.repeat(120)}/${'y'.repeat(120)}`).body.toString(), 'deep', format);
    t.is(by.get('hard').type, 'hardlink');
    t.is(by.get('sym').linkpath, 'f');
    if (by.has('fifo')) t.is(by.get('fifo').type, 'fifo');
    if (format === 'pax' && xattr) t.deepEqual(by.get('f').xattrs.get('user.test'), Buffer.from([0, 0xff, 1]));
  }
});

test('tar: corrupt, truncated and unsupported archives are errors', async (t) => {
  const good = tar([file('a', 'x'.repeat(1000)), file('b', 'y')]);
  const cases = [
    [tar([file('a', 'x', { badChecksum: true })]), /checksum/],
    [good.subarray(0, 700), /truncated/],
    [good.subarray(0, 300), /truncated/],
    [good.subarray(0, 512 * 3), /truncated/], // cut at a block boundary: no end-of-archive marker
    [tar([{ path: 's', type: 'file', typeflag: 'S' }]), /sparse \('S'\) entry without a GNU header/],
    [tar([{ path: 'v', type: 'file', typeflag: 'V' }]), /unsupported tar entry type 'V'/],
    [Buffer.concat([extHeader('x', Buffer.from('garbage')), good]), /PAX/],
    // as Go's parsePAX: NUL padding, a NUL in a key or in a path, an empty key (validPAXRecord)
    [Buffer.concat([extHeader('x', Buffer.concat([paxBody([['mtime', '1']]), Buffer.alloc(20)])), good]), /malformed PAX extended header/],
    [Buffer.concat([extHeader('x', paxBody([['SCHILY.xattr.user.a\0b', 'v']])), good]), /NUL byte/],
    [Buffer.concat([extHeader('x', paxBody([['path', 'a\0b']])), good]), /NUL byte/],
    [Buffer.concat([extHeader('x', paxBody([['', 'v']])), good]), /empty key/],
    // an extended header over 1 MiB (Go's limit, "header field too long")
    [Buffer.concat([extHeader('x', paxBody([['comment', 'c'.repeat(1 << 20)]])), good]), /extended header of \d+ bytes is too large/],
  ];
  for (const [bytes, re] of cases) {
    await t.throwsAsync(readAllEntries(bytes, [100]), { message: re });
  }
});

/** Files with holes, as `truncate` and writes at offsets make them: name -> [size, [[offset, bytes]...]]. */
function makeSparseFiles(dir) {
  const rnd = (n) => crypto.randomBytes(n);
  const files = {
    big: [20 << 20, [[0, Buffer.from('head')], [5 << 20, rnd(8192)], [(20 << 20) - 3, Buffer.from('end')]]], // streamed (over 8 MiB)
    small: [3 << 20, [[1 << 20, rnd(5000)]]], // read whole
    allhole: [12 << 20, []],
    tailhole: [9 << 20, [[4096, rnd(100_000)]]],
    lastlog: [64 << 20, [[40 << 20, Buffer.alloc(100, 'x')]]], // as useradd's lastlog for a high uid, smaller
    odd: [10_000, [[9_000, Buffer.from('abc')]]],
    runs: [(9 << 20) + 1, Array.from({ length: 40 }, (_, i) => [i * 230_000 + (i % 7), rnd(1 + i * 997)])],
  };
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, [size, runs]] of Object.entries(files)) {
    const fd = fs.openSync(path.join(dir, name), 'w');
    fs.ftruncateSync(fd, size);
    for (const [at, bytes] of runs) fs.writeSync(fd, bytes, 0, bytes.length, at);
    fs.closeSync(fd);
  }
  return Object.keys(files);
}

test('tar: sparse files in all of GNU tar\'s forms (old GNU, PAX 0.0, 0.1, 1.0) build into their bytes, holes stay holes in the store', async (t) => {
  const d = tmpdir(t);
  const src = path.join(d, 'src');
  const names = makeSparseFiles(src);
  const want = new Map(names.map((n) => [n, verityDigestOfFile(path.join(src, n))]));
  const blobs = [];
  for (const [format, version] of [['gnu', null], ['pax', '0.0'], ['pax', '0.1'], ['pax', '1.0']]) {
    const what = version ? `pax ${version}` : 'old GNU';
    const out = path.join(d, `${format}${version ?? ''}.tar`);
    const r = spawnSync('tar', ['--sparse', '--format', format, ...(version ? ['--sparse-version', version] : []), '--mtime', '@1700000000', '-C', src, '-cf', out, '.'], { encoding: 'utf8' });
    t.is(r.status, 0, r.stderr);
    const layer = fs.readFileSync(out);
    t.true(layer.length < 2 << 20, `${what}: the archive holds the data runs only (${layer.length} bytes)`);
    if (version === '1.0') t.true(layer.includes('GNUSparseFile'), 'format 1.0 names the entry GNUSparseFile.N/NAME in the header');
    const { blob, store, summary } = await build(t, ociLayout(t, [layer]));
    blobs.push(blob);
    const dump = dumpOf(blob);
    for (const n of names) {
      const st = fs.statSync(path.join(src, n));
      t.is(dump.get('/' + n).size, st.size, `${what} ${n}: size`);
      t.is(dump.get('/' + n).payload, 'obj:' + (await want.get(n)).toString('hex'), `${what} ${n}: fs-verity digest of the file's bytes`);
      const object = objectPath(store, Buffer.from(dump.get('/' + n).payload.slice(4), 'hex'));
      if (st.size <= 8 << 20) continue;
      // streamed objects keep the holes: the object takes no more disk than the file's data
      t.true(fs.statSync(object).blocks * 512 <= st.blocks * 512 + (1 << 20), `${what} ${n}: object is sparse (${fs.statSync(object).blocks} blocks)`);
    }
    t.is(summary.bytes, names.reduce((a, n) => a + fs.statSync(path.join(src, n)).size, 0), `${what}: bytes counts the files' sizes`);
    // what the store holds reads back as the files
    const x = path.join(d, `x-${format}${version ?? ''}`);
    fs.writeFileSync(path.join(d, 'b.ub'), blob);
    t.is(cfs(['extract', path.join(d, 'b.ub'), '--store', store, x]).code, 0);
    for (const n of names.filter((n) => n !== 'lastlog')) t.true(fs.readFileSync(path.join(x, n)).equals(fs.readFileSync(path.join(src, n))), `${what} ${n}: extracted bytes`);
    t.is(await checkStore(t, store), names.length, `${what}: every object re-hashes to its name`);
    for (const n of names.filter((n) => fs.statSync(path.join(src, n)).size > 8 << 20)) {
      t.true(fs.statSync(path.join(x, n)).blocks <= fs.statSync(path.join(src, n)).blocks + 2048, `${what} ${n}: extracted with its holes`);
    }
    const fsck = cfs(['fsck', path.join(d, 'b.ub'), '--store', store]);
    t.is(fsck.code, 0, fsck.stdout + fsck.stderr);
  }
  // fsck hashes holes without reading them, but still sees a byte written into one
  const store = path.join(d, 'store-bad');
  const { out } = await build(t, ociLayout(t, [fs.readFileSync(path.join(d, 'pax1.0.tar'))]), { store });
  const victim = objectPath(store, Buffer.from(dumpOf(fs.readFileSync(out)).get('/allhole').payload.slice(4), 'hex'));
  fs.chmodSync(victim, 0o644);
  fs.writeFileSync(victim, 'x', { flag: 'r+' });
  const bad = cfs(['fsck', out, '--store', store]);
  t.not(bad.code, 0);
  t.regex(bad.stdout + bad.stderr, /content digest is/);
  // same content, same blob (gnu's mtimes are whole seconds, as --mtime gives them to all four)
  for (const b of blobs.slice(1)) t.true(b.equals(blobs[0]), 'the four forms give one blob');
});

test('tar: hostile sparse maps are errors; a sparse version Go does not know is a plain file; holes of terabytes cost nothing in the build, the store, fsck and extract', async (t) => {
  const sparse = (extra, body = 'abcd', size = 4) => tar([file('s', body, {
    pax: [['GNU.sparse.major', '0'], ['GNU.sparse.minor', '1'], ['GNU.sparse.size', String(size)], ...extra],
  })]);
  const cases = [
    [sparse([['GNU.sparse.numblocks', '1'], ['GNU.sparse.map', '2,4']]), /outside the file/],
    [sparse([['GNU.sparse.numblocks', '2'], ['GNU.sparse.map', '0,2,1,2']]), /overlapping or out of order/],
    [sparse([['GNU.sparse.numblocks', '2'], ['GNU.sparse.map', '2,2,0,2']], 'abcd', 10), /out of order/],
    [sparse([['GNU.sparse.numblocks', '1'], ['GNU.sparse.map', '0,3']]), /names 3 bytes of data, the entry holds 4/],
    [sparse([['GNU.sparse.numblocks', '1'], ['GNU.sparse.map', '0,-4']]), /outside the file/],
    [sparse([['GNU.sparse.numblocks', '2'], ['GNU.sparse.map', '0,4']]), /numblocks/],
    [sparse([['GNU.sparse.map', '0,4']]), /numblocks/],
    [sparse([['GNU.sparse.numblocks', '1'], ['GNU.sparse.map', '0,x']]), /invalid number/],
    [tar([file('s', 'ab', { pax: [['GNU.sparse.numbytes', '2']] })]), /0\.0/],
    [tar([file('s', 'ab', { pax: [['GNU.sparse.offset', '0'], ['GNU.sparse.offset', '2']] })]), /0\.0/],
    // 1.0: the map must fit in the entry's data
    [tar([file('s', '1\n0\n', { pax: [['GNU.sparse.major', '1'], ['GNU.sparse.minor', '0'], ['GNU.sparse.realsize', '10']] })]), /runs past/],
    [tar([{ path: 'd', type: 'dir', pax: [['GNU.sparse.major', '0'], ['GNU.sparse.minor', '1'], ['GNU.sparse.numblocks', '0'], ['GNU.sparse.map', '']] }]), /not a regular file/],
    [sparse([['GNU.sparse.numblocks', '0'], ['GNU.sparse.map', '']], '', -7), /negative sparse file size -7/],
  ];
  for (const [bytes, re] of cases) await t.throwsAsync(readAllEntries(bytes, [100]), { message: re }, String(re));
  // a number field read up to its first NUL, as Go reads it ("644\0 junk" is 644)
  const odd = rawHeader({ name: 'odd', size: 3 });
  odd.write('0000644\0x7', 100, 8, 'latin1');
  odd.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of odd) sum += c;
  odd.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  const [oddEntry] = await readAllEntries(Buffer.concat([odd, pad(Buffer.from('abc')), ZERO, ZERO]));
  t.is(oddEntry.mode, 0o644);
  // major 1 without minor 0, or 2.0: Go reads the entry as a plain file, and so do we
  for (const v of [[['GNU.sparse.major', '1']], [['GNU.sparse.major', '2'], ['GNU.sparse.minor', '0']]]) {
    const [e] = await readAllEntries(tar([file('s', 'plain', { pax: v })]));
    t.is(e.body.toString(), 'plain');
  }
  // 1.0 with its map in the body: GNU.sparse.name names the file; 16 TiB of hole around 4 bytes
  const TiB16 = 2 ** 44;
  const map = pad(Buffer.from(`1\n${TiB16 - 8}\n4\n`));
  const huge = tar([file('GNUSparseFile.0/h', Buffer.concat([map, Buffer.from('data')]), {
    pax: [['GNU.sparse.major', '1'], ['GNU.sparse.minor', '0'], ['GNU.sparse.name', 'huge'], ['GNU.sparse.realsize', String(TiB16 - 4)]],
  })]);
  // into a store: the object is a 16 TiB hole; fsck and extract skip it (hours if they read it)
  const tb = 2 ** 40; // ext4's largest file is just under 16 TiB
  const hugeLayer = tar([file('GNUSparseFile.0/h', Buffer.concat([pad(Buffer.from(`1\n${tb - 4}\n4\n`)), Buffer.from('tail')]), {
    pax: [['GNU.sparse.major', '1'], ['GNU.sparse.minor', '0'], ['GNU.sparse.name', 'huge'], ['GNU.sparse.realsize', String(tb)]],
  })]);
  const { out, store } = await build(t, ociLayout(t, [hugeLayer]));
  t.is(cfs(['fsck', out, '--store', store]).code, 0);
  const x = path.join(path.dirname(out), 'x');
  t.is(cfs(['extract', out, '--store', store, x]).code, 0);
  t.is(fs.statSync(path.join(x, 'huge')).size, tb);
  const fd = fs.openSync(path.join(x, 'huge'), 'r');
  const tail = Buffer.alloc(6);
  fs.readSync(fd, tail, 0, 6, tb - 6);
  fs.closeSync(fd);
  t.deepEqual(tail, Buffer.from('\0\0tail'));
  const root = await applyAll([huge]);
  const node = lookup(root, 'huge');
  t.is(node.size, TiB16 - 4);
  const h = new VerityHasher();
  h.updateZeros(TiB16 - 8);
  h.update(Buffer.from('data'));
  t.deepEqual(node.digest, h.digest(), 'the digest of 16 TiB less 4 bytes, from a run of zeros');
});

test('tar: a big body streams in chunks with backpressure, trailing bytes are drained', async (t) => {
  const big = crypto.randomBytes(3 << 20);
  const tb = Buffer.concat([tar([file('big', big), file('after', 'z')]), Buffer.alloc(10240)]);
  let pulled = 0;
  async function* source() {
    for (let pos = 0; pos < tb.length; pos += 65536) {
      pulled = pos;
      yield tb.subarray(pos, pos + 65536);
    }
    pulled = tb.length;
  }
  const r = new TarReader(source());
  const e = await r.next();
  t.is(e.size, big.length);
  const hash = crypto.createHash('sha256');
  let maxAhead = 0;
  let seen = 0;
  for await (const c of r.bodyChunks()) {
    seen += c.length;
    hash.update(c);
    maxAhead = Math.max(maxAhead, pulled - seen);
  }
  t.is(hash.digest('hex'), crypto.createHash('sha256').update(big).digest('hex'));
  t.true(maxAhead < 4 * 65536, 'the reader does not run ahead of the consumer');
  t.is((await r.next()).path, 'after');
  t.is(await r.next(), null);
  t.is(pulled, tb.length, 'everything after the end-of-archive blocks was read');
});

test('tar: a PAX size overrides the header size, when streaming and when indexing by seeking', async (t) => {
  const tb = tar([{ path: 'p', type: 'file', body: 'hello', size: 0, pax: [['size', '5']] }, file('q', 'after')]);
  const es = await readAllEntries(tb, [700]);
  t.deepEqual(es.map((e) => [e.path, e.body.toString()]), [['p', 'hello'], ['q', 'after']]);
  const members = [...walkTarHeaders((off, size) => tb.subarray(off, off + size), tb.length)];
  t.deepEqual(members.map((m) => [m.name, tb.subarray(m.offset, m.offset + m.size).toString()]), [['p', 'hello'], ['q', 'after']]);
});

// ==========================================================================================
// Layer semantics (applied onto a tree, no store)

test('layers: whiteouts hide lower content only, and never appear in the tree', async (t) => {
  const root = await applyAll([
    tar([dir('a/'), file('a/f', 'x'), dir('a/d/'), file('a/d/g', 'y'), file('keep', 'k')]),
    tar([
      dir('a/'),
      file('a/.wh.f'),
      file('a/.wh.d'),
      file('a/new', 'n'),
      file('a/.wh.new'), // same-layer content is not hidden by a whiteout
      file('.wh.absent'),
      file('a/.wh..wh.plnk'), // aufs metadata: ignored
    ]),
  ]);
  t.deepEqual(names(root, 'a'), ['new']);
  t.deepEqual(names(root, ''), ['a', 'keep']);
});

test('layers: opaque directories keep what this layer added before and after the marker', async (t) => {
  const lower = tar([dir('d/'), file('d/a', '1'), dir('d/sub/'), file('d/sub/x', '2'), dir('d/sub2/'), file('d/sub2/z', '3'), dir('e/'), file('e/keep', '4')]);
  for (const markerFirst of [true, false]) {
    const marker = file('d/.wh..wh..opq');
    const mine = [file('d/b', 'b'), file('d/sub/y', 'y'), dir('d/sub2/')];
    const upper = tar([dir('d/'), ...(markerFirst ? [marker, ...mine] : [...mine, marker]), file('d/c', 'c')]);
    const root = await applyAll([lower, upper]);
    t.deepEqual(names(root, 'd'), ['b', 'c', 'sub', 'sub2'], `marker first: ${markerFirst}`);
    t.deepEqual(names(root, 'd/sub'), ['y'], 'lower content of a directory this layer passed through is hidden');
    t.deepEqual(names(root, 'd/sub2'), [], 'a directory entry re-created by this layer is empty');
    t.deepEqual(names(root, 'e'), ['keep']);
  }
  // An opaque marker with no directory entry: the directory exists (implicitly) and is empty.
  const root = await applyAll([lower, tar([file('d/.wh..wh..opq')])]);
  t.deepEqual(names(root, 'd'), []);
});

// What a differential fuzzer (random layers: cfs extract against umoci unpack, Go's archive/tar
// underneath, as in containerd) found. Each of these read otherwise before.
test('tar as Go reads it: empty PAX values, repeated and mixed name headers, header-only types, a zero block inside, V7 slash', async (t) => {
  const raw = (h, body = Buffer.alloc(0)) => Buffer.concat([rawHeader(h), pad(body)]);
  const tb = tar([
    // an empty value is no record: the header's field stands (an empty xattr is kept, as containerd sets it)
    { path: 'empty-pax', type: 'file', body: 'e', uid: 5, gid: 6, mtime: 1234, pax: [['path', ''], ['uid', ''], ['gid', ''], ['mtime', ''], ['size', ''], ['SCHILY.xattr.user.e', '']] },
    { path: 'link', type: 'symlink', linkname: 'target', pax: [['linkpath', '']] },
    // PAX path, then a GNU long name: the long name wins (and the other order too)
    extHeader('x', paxBody([['path', 'from-pax-1']])),
    extHeader('L', Buffer.from('from-L-1\0'), '././@LongLink'),
    raw({ name: 'header-1', size: 1 }, Buffer.from('1')),
    extHeader('L', Buffer.from('from-L-2\0'), '././@LongLink'),
    extHeader('x', paxBody([['path', 'from-pax-2']])),
    raw({ name: 'header-2', size: 1 }, Buffer.from('2')),
    // two PAX headers: the second replaces the first (its uid goes); two L: the last wins
    extHeader('x', paxBody([['path', 'first-pax'], ['uid', '77']])),
    extHeader('x', paxBody([['path', 'second-pax']])),
    raw({ name: 'header-3', size: 1, uid: 3 }, Buffer.from('3')),
    extHeader('L', Buffer.from('first-L\0'), '././@LongLink'),
    extHeader('L', Buffer.from('second-L\0'), '././@LongLink'),
    raw({ name: 'header-4', size: 1 }, Buffer.from('4')),
    // a directory with a size field and no body: nothing of the next header is skipped
    raw({ name: 'sized-dir/', typeflag: '5', size: 512 }),
    // '0' with a trailing slash is a file (Go), NUL with one a directory (V7)
    raw({ name: 'slash-file/', typeflag: '0', size: 2 }, Buffer.from('sf')),
    raw({ name: 'v7-dir/', typeflag: '\0' }),
    // a global header ends what came before it (Go returns it as an entry); an empty L is none
    extHeader('x', paxBody([['path', 'lost-pax']])),
    extHeader('L', Buffer.from('lost-L\0'), '././@LongLink'),
    extHeader('g', paxBody([['comment', 'x']])),
    extHeader('L', Buffer.from('\0'), '././@LongLink'),
    raw({ name: 'after-g', size: 1 }, Buffer.from('g')),
    file('last', 'L'),
  ]);
  for (const sizes of [undefined, [1], [511, 513, 7]]) {
    const es = await readAllEntries(tb, sizes);
    const by = new Map(es.map((e) => [e.path, e]));
    t.deepEqual(es.map((e) => e.path), ['empty-pax', 'link', 'from-L-1', 'from-L-2', 'second-pax', 'second-L', 'sized-dir/', 'slash-file/', 'v7-dir/', 'after-g', 'last']);
    const e = by.get('empty-pax');
    t.deepEqual([e.uid, e.gid, e.mtimeSec, e.size, e.body.toString()], [5, 6, 1234, 1, 'e']);
    t.deepEqual(e.xattrs.get('user.e'), Buffer.alloc(0));
    t.is(by.get('link').linkpath, 'target');
    t.is(by.get('second-pax').uid, 3, "the first PAX header's uid is gone with it");
    t.is(by.get('sized-dir/').type, 'dir');
    t.is(by.get('slash-file/').type, 'file');
    t.is(by.get('slash-file/').body.toString(), 'sf');
    t.is(by.get('v7-dir/').type, 'dir');
    t.is(by.get('last').body.toString(), 'L');
  }
  // a zero block, then more entries: corrupt, not an end (the rest would be lost unseen)
  const early = Buffer.concat([entry(file('a', 'x')), ZERO, entry(file('b', 'y')), ZERO, ZERO]);
  await t.throwsAsync(readAllEntries(early), { message: /a zero block inside the archive/ });
  t.throws(() => [...walkTarHeaders((off, size) => early.subarray(off, off + size), early.length)], { message: /a zero block inside the archive/ });
  // one zero block at the very end is an end
  t.deepEqual((await readAllEntries(Buffer.concat([entry(file('a', 'x')), ZERO]))).map((x) => x.path), ['a']);
});

test('layers: a whiteout creates and touches nothing; long whiteout names; below a file it removes nothing', async (t) => {
  // whiteouts inside a directory do not make it this layer's: a later whiteout of it removes it
  let root = await applyAll([tar([dir('d/'), file('d/x', 'x'), file('d/y', 'y')]), tar([file('d/.wh.x'), file('.wh.d')])]);
  t.deepEqual(names(root, ''), []);
  // ...nor an opaque marker's: a/b goes with the opaque a
  root = await applyAll([tar([file('a/b/c', 'c'), file('a/b/k', 'k')]), tar([file('a/b/.wh.c'), file('a/.wh..wh..opq')])]);
  t.deepEqual(names(root, 'a'), []);
  // a whiteout under a missing directory creates none; under a file it is a no-op
  root = await applyAll([tar([file('f', 'f')]), tar([file('nodir/sub/.wh.x'), file('f/.wh.x')])]);
  t.deepEqual(names(root, ''), ['f']);
  t.is(lookup(root, 'f').inline.toString(), 'f');
  // the longest name a directory can hold can be whited out (".wh." is not part of it)
  const long = 'L'.repeat(255);
  root = await applyAll([tar([file(long, 'l'), file('keep', 'k')]), tar([file(`.wh.${long}`)])]);
  t.deepEqual(names(root, ''), ['keep']);
  await t.throwsAsync(applyAll([tar([file(`.wh.${long}x`)])]), { message: /longer than 255 bytes/ });
  await t.throwsAsync(applyAll([tar([file(`${long}x`, 'x')])]), { message: /longer than 255 bytes/ });
  // a hardlink to its own path or below it: the runtimes remove the path first, then find no target
  await t.throwsAsync(applyAll([tar([file('f', 'f'), { path: 'f', type: 'hardlink', linkname: 'f' }])]), { message: /hardlink target f is the entry itself or below it/ });
  await t.throwsAsync(applyAll([tar([file('d/f', 'f'), { path: 'd', type: 'hardlink', linkname: './d/f' }])]), { message: /hardlink target \.\/d\/f is the entry itself or below it/ });
  // below a symlink it removes what is there in the image, as the runtimes resolve it
  root = await applyAll([tar([{ path: 'bin', type: 'symlink', linkname: 'usr/bin' }, file('usr/bin/foo', 'f'), file('usr/bin/bar', 'b')]), tar([file('bin/.wh.foo')])]);
  t.deepEqual(names(root, 'usr/bin'), ['bar']);
});

test('layers: a symlink on an entry\'s path is followed inside the image, as containerd and umoci resolve it (securejoin)', async (t) => {
  const root = await applyAll([
    tar([
      { path: 'bin', type: 'symlink', linkname: 'usr/bin' }, // merged /usr: a layer built elsewhere writes bin/app
      { path: 'lib', type: 'symlink', linkname: '/usr/lib' },
      { path: 'up', type: 'symlink', linkname: '../../../..' }, // ".." never leaves the image
      { path: 'abs', type: 'symlink', linkname: '/tmp/outside' }, // nor does an absolute target
      { path: 'etc/alt', type: 'symlink', linkname: '../opt/./real' },
      file('opt/real/keep', 'k'),
      file('usr/bin/old', 'o'),
    ]),
    tar([
      file('bin/app', 'app'),
      file('lib/x/libz.so', 'z'), // usr/lib did not exist: made, as MkdirAll does
      file('up/at-root', 'r'),
      file('abs/inside', 'i'),
      file('etc/alt/new', 'n'),
      { path: 'bin/app-link', type: 'hardlink', linkname: 'bin/old' }, // a hardlink's target resolves the same way
    ]),
  ]);
  t.is(lookup(root, 'usr/bin/app').inline.toString(), 'app');
  t.is(lookup(root, 'bin').target, 'usr/bin', 'the link itself stays');
  t.is(lookup(root, 'usr/lib/x/libz.so').inline.toString(), 'z');
  t.is(lookup(root, 'at-root').inline.toString(), 'r');
  t.is(lookup(root, 'tmp/outside/inside').inline.toString(), 'i');
  t.deepEqual(names(root, 'opt/real'), ['keep', 'new']);
  t.is(lookup(root, 'usr/bin/app-link'), lookup(root, 'usr/bin/old'));
  // an opaque directory reached through a link is the link's target
  const opq = await applyAll([tar([{ path: 'bin', type: 'symlink', linkname: 'usr/bin' }, file('usr/bin/a', 'a')]), tar([file('bin/.wh..wh..opq'), file('bin/b', 'b')])]);
  t.deepEqual(names(opq, 'usr/bin'), ['b']);
});

test('layers: hardlinks within and across layers; a replaced file breaks earlier links', async (t) => {
  const root = await applyAll([
    tar([file('a', 'one'), { path: 'b', type: 'hardlink', linkname: 'a' }]),
    tar([{ path: 'c', type: 'hardlink', linkname: './a' }, { path: 'sub/d', type: 'hardlink', linkname: '/b' }]),
    tar([file('a', 'two'), file('x', 'first'), { path: 'y', type: 'hardlink', linkname: 'x' }, file('x', 'second')]),
  ]);
  const [a, b, c, d] = ['a', 'b', 'c', 'sub/d'].map((p) => lookup(root, p));
  t.is(b, c);
  t.is(c, d);
  t.not(a, b, 'a new regular file entry is a new inode');
  t.is(a.inline.toString(), 'two');
  t.is(b.inline.toString(), 'one');
  t.is(lookup(root, 'x').inline.toString(), 'second', 'repeated entry: last wins');
  t.is(lookup(root, 'y').inline.toString(), 'first', 'the link made before the repeat keeps the old inode');
  // A hardlink to a symlink is a hardlinked symlink.
  const r2 = await applyAll([tar([{ path: 's', type: 'symlink', linkname: 'nowhere' }, { path: 's2', type: 'hardlink', linkname: 's' }])]);
  t.is(lookup(r2, 's'), lookup(r2, 's2'));
});

test('layers: directories over directories keep children; other types replace', async (t) => {
  const root = await applyAll([
    tar([dir('d/', { mode: 0o700, uid: 5 }), file('d/f', 'x'), dir('t/'), file('t/in', 'i'), file('u', 'file'), { path: 'v', type: 'symlink', linkname: 'x' }]),
    tar([dir('d', { mode: 0o750, uid: 6, mtime: 42 }), file('t', 'now a file'), dir('u/'), dir('v/')]),
  ]);
  const d = lookup(root, 'd');
  t.is(d.mode & 0o7777, 0o750);
  t.is(d.uid, 6);
  t.is(d.mtimeSec, 42);
  t.deepEqual(names(root, 'd'), ['f']);
  t.is(lookup(root, 't').inline.toString(), 'now a file');
  t.deepEqual(names(root, 'u'), []);
  t.deepEqual(names(root, 'v'), []);
});

test('layers: implicit parents, ./ prefixes, trailing and repeated slashes, absolute paths, root entry', async (t) => {
  const root = await applyAll([
    tar([file('./a/b/c', 'x'), dir('/abs//path//'), file('//abs/path/f', 'y'), dir('./', { mode: 0o700, uid: 1, mtime: 99 }), file('.//./a/b/d', 'z')]),
  ]);
  const a = lookup(root, 'a');
  t.is(a.mode, 0o40755);
  t.is(a.uid, 0);
  t.is(a.mtimeSec, 0);
  t.deepEqual(names(root, 'a/b'), ['c', 'd']);
  t.is(lookup(root, 'abs/path/f').inline.toString(), 'y');
  t.deepEqual(names(root, ''), ['a', 'abs']);
  t.is(root.mode & 0o7777, 0o700);
  t.is(root.mtimeSec, 99);
});

// containerd's applier skips an entry that resolves to the root ("resolved to root"); umoci and
// docker apply it. The snapshotter takes containerd's way (what containerd's own snapshotters show
// a container); cfs build takes umoci's unless --ignore-root-entries.
test('layers: a "./" entry is applied to the root, or ignored with rootEntries: ignore (as containerd), also a file there', async (t) => {
  const layers = [
    tar([dir('./', { mode: 0o755, mtime: 5 }), file('bin/sh', 'sh')]),
    tar([dir('./', { mode: 0o700, uid: 1000, gid: 1000, mtime: 99 }), file('hello', 'hi'), file('./', 'a file named ./')]),
  ];
  await t.throwsAsync(applyAll(layers), { message: /the root must be a directory/ });
  const applied = await applyAll(layers.slice(0, 1).concat(tar([dir('./', { mode: 0o700, uid: 1000, gid: 1000, mtime: 99 }), file('hello', 'hi')])));
  t.is(`${applied.mode & 0o7777} ${applied.uid} ${applied.mtimeSec}`, `${0o700} 1000 99`);
  const root = newTree();
  let i = 0;
  for (const tb of layers) {
    await applyLayerStream(root, Readable.from([tb]), { layer: `layer${++i}`, inlineThreshold: 64, store: null, stats: { entries: 0 }, rootEntries: 'ignore' });
  }
  t.is(`${root.mode & 0o7777} ${root.uid} ${root.gid} ${root.mtimeSec}`, `${0o755} 0 0 0`);
  t.deepEqual(names(root, ''), ['bin', 'hello']);
  t.is(lookup(root, 'hello').inline.toString(), 'hi');
  // the CLI: --ignore-root-entries, and not with a directory
  const image = ociLayout(t, [layers[0], tar([dir('./', { mode: 0o700, uid: 1000, gid: 1000, mtime: 99 }), file('hello', 'hi')])]);
  const d = tmpdir(t);
  for (const [extra, want] of [[[], '/ 1 dir 0700 1000 1000'], [['--ignore-root-entries'], '/ 1 dir 0755 0 0']]) {
    const out = path.join(d, `${extra.length}.ub`);
    const r = cfs(['build', ...extra, image, '-o', out, '--store', path.join(d, 'store')]);
    t.is(r.code, 0, r.stderr);
    t.true(cfs(['dump', out]).stdout.split('\n')[1].startsWith(want), cfs(['dump', out]).stdout.split('\n')[1]);
  }
  const bad = cfs(['build', '--ignore-root-entries', '--rootfs', d, '-o', path.join(d, 'x.ub'), '--store', path.join(d, 'store')]);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /^cfs: --ignore-root-entries is about image layers/);
});

test('layers: devices, fifos, symlinks, xattrs, ns mtimes, big ids, long and binary names', async (t) => {
  const longName = 'n'.repeat(255);
  const root = await applyAll([
    tar([
      { path: 'dev/sda', type: 'blk', devmajor: 8, devminor: 0x12345, mode: 0o660, gid: 6 },
      { path: 'dev/tty', type: 'chr', devmajor: 4095, devminor: 1 },
      { path: 'fifo', type: 'fifo', mode: 0o600 },
      { path: 'lnk', type: 'symlink', linkname: '../../' + 'z'.repeat(200) },
      file('bin/ping', 'ELF', { xattrs: { 'security.capability': Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) }, mode: 0o4755 }),
      file('t', '', { mtime: 1_700_000_000, nsec: 999_999_999, uid: 2 ** 32 - 1, gid: 2 ** 31 }),
      file(`x/${longName}`, 'long'),
      file('bin\xff\x01name', 'binary'),
    ]),
  ]);
  const sda = lookup(root, 'dev/sda');
  t.is(sda.mode, 0o60660);
  t.is(sda.rdevMajor, 8);
  t.is(sda.rdevMinor, 0x12345);
  t.is(lookup(root, 'dev/tty').mode & 0o170000, 0o20000);
  t.is(lookup(root, 'fifo').mode, 0o10600);
  t.is(lookup(root, 'lnk').target, '../../' + 'z'.repeat(200));
  t.is(lookup(root, 'lnk').size, 206);
  t.is(lookup(root, 'bin/ping').mode, 0o104755);
  t.is(lookup(root, 'bin/ping').xattrs.get('security.capability')[5], 0x20);
  const tn = lookup(root, 't');
  t.is(tn.mtimeNsec, 999_999_999);
  t.is(tn.uid, 2 ** 32 - 1);
  t.is(tn.gid, 2 ** 31);
  t.is(tn.size, 0);
  t.is(tn.inline, undefined);
  t.is(tn.digest, undefined);
  t.is(lookup(root, `x/${longName}`).inline.toString(), 'long');
  t.is(lookup(root, 'bin\xff\x01name').inline.toString(), 'binary');
});

test('layers: bad paths and dangling hardlinks are errors naming layer and entry', async (t) => {
  const cases = [
    [[tar([file('a/../../etc/passwd', 'x')])], /^layer1: a\/\.\.\/\.\.\/etc\/passwd: .*"\.\."/],
    [[tar([file('f', 'x')]), tar([file('f/evil', 'x')])], /^layer2: f\/evil: f is not a directory$/],
    [[tar([{ path: 'l1', type: 'symlink', linkname: 'l2' }, { path: 'l2', type: 'symlink', linkname: 'l1/x' }, file('l1/y', 'y')])], /^layer1: l1\/y: too many levels of symbolic links on the path$/],
    [[tar([{ path: 'h', type: 'hardlink', linkname: 'missing' }])], /^layer1: h: hardlink target missing does not exist$/],
    [[tar([dir('d/'), { path: 'h', type: 'hardlink', linkname: 'd' }])], /^layer1: h: hardlink target d is a directory$/],
    [[tar([file('f', 'x'), { path: 'h', type: 'hardlink', linkname: 'f/x' }])], /^layer1: h: hardlink target f\/x does not exist$/],
    [[tar([file('f', 'x', { uid: 2 ** 32, base256: true })])], /^layer1: f: uid 4294967296 out of range/],
    [[tar([{ path: 's', type: 'symlink', linkname: '' }])], /^layer1: s: symlink with an empty target$/],
    [[tar([file('a'.repeat(256), 'x')])], /longer than 255/],
    [[tar([file('x', '1')]).subarray(0, 1024)], /^layer1: the header after x: truncated archive/],
    [[tar([file('a', '1'), file('b', '2', { badChecksum: true })])], /^layer1: the header after a: bad tar header checksum/],
    [[tar([file('a', '1', { badChecksum: true })])], /^layer1: the first header: bad tar header checksum/],
    [[tar([file('.', 'x')])], /^layer1: \.: the root must be a directory$/],
    [[tar([file('bad\nname', 'x'), { path: 'h', type: 'hardlink', linkname: 'no' }])], /^layer1: h: /],
  ];
  for (const [tars, re] of cases) {
    const err = await t.throwsAsync(applyAll(tars), { message: re });
    t.false(err.message.includes('\n'), 'one line');
  }
});

// ==========================================================================================
// Images: formats, compressions, tags, platforms

/** Layers exercising most features, for format-equivalence checks. */
function sampleLayers() {
  const big = Buffer.alloc((9 << 20) + 123);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
  return [
    tar([
      dir('./', { mode: 0o755, mtime: 5 }),
      dir('etc/'),
      file('etc/hostname', 'box\n'),
      file('etc/os-release', 'NAME=test\n'.repeat(20)),
      dir('usr/bin/'),
      file('usr/bin/tool', crypto.createHash('sha512').update('tool').digest(), { mode: 0o755 }),
      file('usr/bin/ping', 'ping-binary'.repeat(10), { xattrs: { 'security.capability': Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0]) } }),
      { path: 'usr/bin/ping6', type: 'hardlink', linkname: 'usr/bin/ping' },
      { path: 'bin', type: 'symlink', linkname: 'usr/bin' },
      { path: 'dev/null', type: 'chr', devmajor: 1, devminor: 3, mode: 0o666 },
      file('var/big.img', big),
      dir('var/cache/'),
      file('var/cache/a', 'aaaa'.repeat(100)),
      file('empty', ''),
    ]),
    tar([
      file('etc/.wh.hostname'),
      file('var/cache/.wh..wh..opq'),
      file('var/cache/b', 'b'.repeat(65)),
      file('usr/bin/tool', 'replaced', { mtime: 1_700_000_001, nsec: 5 }),
      file('home/u/' + 'long'.repeat(60), 'x', { uid: 100_000, gid: 100_000 }),
    ]),
  ];
}

test('images: identical blobs from docker-archive, oci-archive and OCI layout, any compression', async (t) => {
  const tars = sampleLayers();
  const images = [
    ['oci-layout gzip', ociLayout(t, tars, { compression: 'gzip' })],
    ['oci-layout zstd', ociLayout(t, tars, { compression: 'zstd' })],
    ['oci-layout none', ociLayout(t, tars, { compression: 'none' })],
    ['oci-archive mixed', ociArchive(t, tars, { compression: ['zstd', 'none'] })],
    // Media type says gzip, bytes are zstd: compression is detected from the bytes.
    ['oci-layout mislabeled', ociLayout(t, tars, { compression: 'zstd', mediaTypes: [MT.gzip, MT.gzip] })],
    ['docker-archive', dockerArchive(t, [{ tars, repoTags: ['test:1'] }])],
    ['docker-archive gzip', dockerArchive(t, [{ tars }], { compression: 'gzip' })],
  ];
  const store = path.join(tmpdir(t), 'store');
  let first;
  for (const [label, image] of images) {
    const { blob, summary } = await build(t, image, { store });
    if (!first) {
      first = blob;
      t.is(summary.layers, 2);
      t.is(summary.objectsPresent, 0);
      t.true(summary.objectsNew >= 4);
    } else {
      t.true(blob.equals(first), `${label}: byte-identical blob`);
      t.is(summary.objectsNew, 0, `${label}: every object already present`);
    }
  }
  const d = dumpOf(first);
  t.false(d.has('/etc/hostname'));
  t.deepEqual([...d.keys()].filter((p) => p.startsWith('/var/cache/')), ['/var/cache/b']);
  t.is(d.get('/usr/bin/ping').nlink, 2);
  t.is(d.get('/usr/bin/ping').ino, d.get('/usr/bin/ping6').ino);
  t.is(d.get('/usr/bin/ping').xattrs, 'security.capability=0100000200200000');
  t.is(d.get('/usr/bin/tool').mtime, '1700000001.000000005');
  t.is(d.get('/dev/null').payload, 'dev:1,3');
  t.is(d.get('/bin').payload, 'link:usr/bin');
  t.is(d.get('/empty').payload, '-');
  t.is(d.get('/').mtime, '5.000000000');
  t.is(d.get('/home').perm, '0755');
  t.is(d.get('/home/u/' + 'long'.repeat(60)).uid, 100_000);
  const bigDigest = await verityDigestOfFile(objectPath(store, d.get('/var/big.img').payload.slice(4)));
  t.is('obj:' + bigDigest.toString('hex'), d.get('/var/big.img').payload, 'streamed object content matches');
  const fsverity = spawnSync('fsverity', ['digest', '--compact', objectPath(store, bigDigest)], { encoding: 'utf8' });
  if (fsverity.status === 0) t.is(fsverity.stdout.trim(), bigDigest.toString('hex'), 'agrees with fsverity(1)');
  await checkStore(t, store);
  t.deepEqual(temps(store), []);
});

test('images: inline threshold decides inline vs object, summary counts', async (t) => {
  const layer = tar([file('one', 'x'), file('b64', 'y'.repeat(64)), file('b65', 'z'.repeat(65)), file('b4096', 'w'.repeat(4096)), file('e', ''), { path: 'h', type: 'hardlink', linkname: 'b65' }]);
  const image = ociLayout(t, [layer]);
  for (const [threshold, inline] of [[0, 0], [64, 2], [4096, 4]]) {
    const { blob, summary } = await build(t, image, { inlineThreshold: threshold });
    const payloads = [...new Map([...dumpOf(blob).values()].map((e) => [e.ino, e.payload])).values()];
    t.is(payloads.filter((p) => p.startsWith('inline:')).length, inline);
    t.is(summary.inlineFiles, inline);
    t.is(summary.objectsNew, 4 - inline);
    t.is(summary.entries, 6);
    t.is(summary.inodes, 6);
    t.is(summary.bytes, 1 + 64 + 65 + 4096);
    t.is(summary.blobBytes, blob.length);
  }
  await t.throwsAsync(build(t, image, { inlineThreshold: 4097 }), { message: /inline-threshold/ });
});

test('images: tags in OCI layouts and docker archives, paths containing ":"', async (t) => {
  const d = tmpdir(t);
  const layout = path.join(d, 'with:colon');
  fs.mkdirSync(layout);
  const a = putImage(layout, [tar([file('which', 'a')])]);
  const b = putImage(layout, [tar([file('which', 'b')])]);
  writeLayout(layout, [tagged(a, 'a'), tagged(b, 'v:b')]);
  const which = async (image) => lookup((await buildTree({ image })).root, 'which').inline.toString();
  t.is(await which(`${layout}:a`), 'a');
  t.is(await which(`${layout}:v:b`), 'b');
  await t.throwsAsync(which(layout), { message: /several images.*tags: a, v:b/ });
  await t.throwsAsync(which(`${layout}:nope`), { message: /no image tagged "nope".*tags: a, v:b/ });
  // A layout directory whose own name looks like PATH:TAG: the whole string exists, so no tag.
  const single = path.join(d, 'single:tag');
  fs.mkdirSync(single);
  writeLayout(single, [putImage(single, [tar([file('which', 'single')])])]);
  t.is(await which(single), 'single');

  const docker = dockerArchive(t, [
    { tars: [tar([file('which', 'deb')])], repoTags: ['docker.io/library/debian:12'] },
    { tars: [tar([file('which', 'reg')])], repoTags: ['localhost:5000/x/y:latest'] },
  ]);
  t.is(await which(`${docker}:debian:12`), 'deb');
  t.is(await which(`${docker}:localhost:5000/x/y`), 'reg');
  await t.throwsAsync(which(docker), { message: /several images.*docker\.io\/library\/debian:12/ });

  // skopeo's transport prefixes name the format, which must be the one found
  t.is(await which(`oci:${layout}:v:b`), 'b');
  t.is(await which(`docker-archive:${docker}:debian:12`), 'deb');
  await t.throwsAsync(which(`oci-archive:${layout}:a`), { message: /is an OCI layout, not an oci-archive \(oci-archive:\)/ });
  await t.throwsAsync(which(`oci:${docker}:debian:12`), { message: /is a docker-archive, not an OCI layout \(oci:\)/ });
  // ...and a path that exists as written is a path
  const named = path.join(d, 'oci:dir');
  fs.mkdirSync(named);
  writeLayout(named, [putImage(named, [tar([file('which', 'named')])])]);
  const run = spawnSync(process.execPath, [path.join(ROOT, 'bin/cfs'), 'build', 'oci:dir', '-o', 'named.ub', '--store', 'store', '--no-root'], { cwd: d, encoding: 'utf8' });
  t.is(run.status, 0, run.stderr);
  t.is(execFileSync(process.execPath, [path.join(ROOT, 'bin/cfs'), 'cat', 'named.ub', '/which'], { cwd: d, encoding: 'utf8' }), 'named');
});

test('images: docker-archive members that are symlinks or hardlinks (docker save dedup) are followed', async (t) => {
  const layer = tar([file('shared', 'same layer twice')]);
  const id = sha256(layer).slice(7);
  const config = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [sha256(layer), sha256(layer), sha256(layer)] } }));
  const manifest = JSON.stringify([{ Config: 'config.json', RepoTags: ['x:1'], Layers: [`${id}/layer.tar`, 'other/layer.tar', 'third/layer.tar'] }]);
  const archive = path.join(tmpdir(t), 'dedup.tar');
  fs.writeFileSync(archive, tar([
    file('manifest.json', manifest),
    file('config.json', config),
    dir(`${id}/`),
    file(`${id}/layer.tar`, layer),
    dir('other/'),
    { path: 'other/layer.tar', type: 'symlink', linkname: `../${id}/layer.tar` },
    { path: 'third/layer.tar', type: 'hardlink', linkname: `${id}/layer.tar` },
  ]));
  const { root } = await buildTree({ image: `${archive}:x:1` });
  t.is(lookup(root, 'shared').inline.toString(), 'same layer twice');
});

test('images: multi-platform indexes (nested) are resolved by --platform', async (t) => {
  const layout = path.join(tmpdir(t), 'multi');
  fs.mkdirSync(layout);
  const plat = (os, architecture, variant) => ({ os, architecture, ...(variant ? { variant } : {}) });
  const img = (s, p) => ({ ...putImage(layout, [tar([file('arch', s)])], { platform: p }), platform: p });
  const inner = putIndex(layout, [img('arm64', plat('linux', 'arm64', 'v8')), img('armv7', plat('linux', 'arm', 'v7')), img('armv6', plat('linux', 'arm', 'v6'))]);
  const outer = putIndex(layout, [
    img('amd64', plat('linux', 'amd64')),
    { ...putBlob(layout, Buffer.from('{}'), 'application/vnd.in-toto+json'), platform: plat('unknown', 'unknown') },
    inner,
  ]);
  writeLayout(layout, [tagged(outer, 'latest')]);
  const arch = async (platform) => lookup((await buildTree({ image: layout, platform })).root, 'arch').inline.toString();
  if (process.arch === 'x64') t.is(await arch(undefined), 'amd64', 'default: this machine (linux/amd64)');
  t.is(await arch('linux/amd64'), 'amd64');
  t.is(await arch('linux/arm64'), 'arm64');
  t.is(await arch('linux/arm/v6'), 'armv6');
  t.is(await arch('linux/arm/v7'), 'armv7');
  await t.throwsAsync(arch('linux/riscv64'), { message: /no image for platform linux\/riscv64 \(available: linux\/amd64, unknown\/unknown, linux\/arm64\/v8, linux\/arm\/v7, linux\/arm\/v6\)/ });
  await t.throwsAsync(arch('linux'), { message: /invalid platform/ });
  // an image of one platform (no index of platforms) is checked against its config
  const single = path.join(tmpdir(t), 'single');
  fs.mkdirSync(single);
  writeLayout(single, [tagged(putImage(single, [tar([file('arch', 'arm64')])], { platform: plat('linux', 'arm64') }), 'latest')]);
  t.is(lookup((await buildTree({ image: single, platform: 'linux/arm64/v8' })).root, 'arch').inline.toString(), 'arm64');
  await t.throwsAsync(buildTree({ image: single, platform: 'linux/amd64' }), { message: /the image is linux\/arm64, not linux\/amd64 \(--platform\)/ });
});

test('stores: objects already in any store are reused; new ones land in one store', async (t) => {
  const d = tmpdir(t);
  const [s1, s2] = [path.join(d, 's1'), path.join(d, 's2')];
  const known = 'k'.repeat(1000);
  await buildImage({ image: ociLayout(t, [tar([file('k', known)])]), out: path.join(d, 'a.ub'), stores: [s2] });
  const image = ociLayout(t, [tar([file('k', known), file('n1', 'n'.repeat(500)), file('n2', 'm'.repeat(9 << 20))])]);
  const summary = await buildImage({ image, out: path.join(d, 'b.ub'), stores: [s1, s2] });
  t.is(summary.objectsPresent, 1);
  t.is(summary.objectsNew, 2);
  t.false(fs.existsSync(objectPath(s1, verityDigest(Buffer.from(known)))), 'not copied into the other store');
  const n1 = verityDigest(Buffer.from('n'.repeat(500)));
  t.true(fs.existsSync(objectPath(s1, n1)) !== fs.existsSync(objectPath(s2, n1)), 'exactly one store got the new object');
  t.is(fs.statSync(objectPath(fs.existsSync(objectPath(s1, n1)) ? s1 : s2, n1)).mode & 0o777, 0o444);
  t.is(await checkStore(t, s1, s2), 3);
  // every reader takes the list of stores: extract and fsck find each object in whichever holds it
  const dest = path.join(d, 'tree');
  const x = cfs(['extract', path.join(d, 'b.ub'), '--store', s1, '--store', s2, dest]);
  t.is(x.code, 0, x.stderr);
  t.is(fs.readFileSync(path.join(dest, 'k'), 'utf8'), known);
  t.is(fs.readFileSync(path.join(dest, 'n1'), 'utf8'), 'n'.repeat(500));
  t.is(fs.statSync(path.join(dest, 'n2')).size, 9 << 20);
  const f = cfs(['fsck', path.join(d, 'b.ub'), '--store', s1, '--store', s2]);
  t.is(f.code, 0, f.stdout + f.stderr);
  // with a store left out, the object it holds is missing: one line, nothing extracted
  const lost = path.join(d, 'lost');
  const one = cfs(['extract', path.join(d, 'b.ub'), '--store', s1, lost]);
  t.is(one.code, 1);
  t.regex(one.stderr, /^cfs: .*not found in any store.*\n$/);
  t.false(fs.existsSync(lost));
  t.not(cfs(['fsck', path.join(d, 'b.ub'), '--store', s1]).code, 0);
});

/** Objects in a store (files in its fan-out directories). */
/** Two tmpfs stores d/PREFIXa and d/PREFIXb mounted with the given options (unmounted after the test). */
function tmpfsStores(t, d, optsA, optsB, prefix = '') {
  return [[`${prefix}a`, optsA], [`${prefix}b`, optsB]].map(([name, opts]) => {
    const dir = path.join(d, name);
    fs.mkdirSync(dir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir]);
    t.teardown(() => spawnSync('umount', [dir]));
    return dir;
  });
}

const objectsIn = (s) => fs.readdirSync(path.join(s, 'objects')).filter((f) => /^[0-9a-f]{2}$/.test(f))
  .reduce((n, f) => n + fs.readdirSync(path.join(s, 'objects', f)).length, 0);

test('stores: a new object goes to the store with the most free space (tmpfs stores of different sizes)', async (t) => {
  const d = tmpdir(t);
  const contents = Array.from({ length: 40 }, (_, i) => crypto.randomBytes(100_000 + i));
  const image = ociLayout(t, [tar(contents.map((c, i) => file(`f${i}`, c)))], { compression: 'none' });
  // each pair: the bigger store takes everything (4 MB of new objects leaves it the roomier)
  for (const [small, large, order] of [['16m', '64m', 'small first'], ['64m', '16m', 'large first']]) {
    const [a, b] = tmpfsStores(t, d, `size=${small}`, `size=${large}`, `${order.split(' ')[0]}-`);
    const summary = await buildImage({ image, out: path.join(d, `${order}.ub`), stores: [a, b] });
    t.is(summary.objectsNew, 40);
    const roomier = small === '64m' ? a : b;
    t.is(objectsIn(roomier), 40, `${order}: all in the roomier store`);
    t.is(objectsIn(roomier === a ? b : a), 0, `${order}: none in the other`);
    t.is(await checkStore(t, a, b), 40);
  }
});

// composefs users ask for reflinks when a store is filled from a directory (containers/composefs#143):
// on a filesystem that clones (XFS, mkfs.xfs's default reflink=1), `cfs build --rootfs --reflink`
// with its store there writes no data; elsewhere (tmpfs, ext4) it copies as before. Needs root (mount).
test('stores: cfs build --rootfs --reflink on XFS clones the tree\'s files into the store (shared extents, no data written); the blob equals a copying build\'s', (t) => {
  const d = tmpdir(t);
  const img = path.join(d, 'xfs.img');
  const mnt = path.join(d, 'xfs');
  fs.mkdirSync(mnt);
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, 1 << 30);
  execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  t.teardown(() => spawnSync('umount', [mnt]));
  const tree = path.join(mnt, 'tree');
  const contents = { 'big': crypto.randomBytes(300_000), 'd/huge': crypto.randomBytes(20 << 20), 'd/mid': crypto.randomBytes(5000), 'small': Buffer.from('inline\n') };
  contents['d/same-as-big'] = contents.big;
  for (const [p, c] of Object.entries(contents)) {
    fs.mkdirSync(path.dirname(path.join(tree, p)), { recursive: true });
    fs.writeFileSync(path.join(tree, p), c);
  }
  execFileSync('sync', ['-f', tree]);
  const store = path.join(mnt, 'store');
  const r = cfs(['build', '--rootfs', tree, '--reflink', '-o', path.join(mnt, 'a.ub'), '--store', store, '--json']);
  t.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  t.is(summary.objectsNew, 3);
  t.is(summary.objectsCloned, 2, 'the files of 256 KiB and more are clones; d/mid (5000 bytes) is copied');
  // FIEMAP: a clone's extents are shared (with the tree's file)
  const shared = (f) => /\bshared\b/.test(execFileSync('filefrag', ['-v', f], { encoding: 'utf8' }));
  for (const p of ['big', 'd/huge', 'd/mid']) {
    const obj = objectPath(store, verityDigest(contents[p]));
    t.true(fs.readFileSync(obj).equals(contents[p]), `${p}: the object holds the file's bytes`);
    t.is(shared(obj), p !== 'd/mid', `${p}: the object shares its extents, or (small) not`);
    t.is(fs.statSync(obj).mode & 0o7777, 0o444);
  }
  // the same tree copied into a store elsewhere (tmpfs: no clones) gives the very same blob
  const [other] = tmpfsStores(t, d, 'size=64m', 'size=1m', 'copy-');
  const c = cfs(['build', '--rootfs', tree, '--reflink', '-o', path.join(d, 'b.ub'), '--store', other, '--json']);
  t.is(c.code, 0, c.stderr);
  t.is(JSON.parse(c.stdout).objectsCloned, 0);
  t.true(fs.readFileSync(path.join(mnt, 'a.ub')).equals(fs.readFileSync(path.join(d, 'b.ub'))));
  // a clone is its own file: writing the tree's file afterwards leaves the object as it was
  fs.writeFileSync(path.join(tree, 'big'), crypto.randomBytes(300_000));
  t.true(fs.readFileSync(objectPath(store, verityDigest(contents.big))).equals(contents.big));
  t.is(cfs(['fsck', path.join(mnt, 'a.ub'), '--store', store]).code, 0);
  // a store on another filesystem than the tree: no clone tried there, the usual copies
  const apart = path.join(d, 'store-apart');
  const e = cfs(['build', '--rootfs', tree, '--reflink', '-o', path.join(d, 'c.ub'), '--store', apart, '--json']);
  t.is(e.code, 0, e.stderr);
  t.is(JSON.parse(e.stdout).objectsCloned, 0);
  t.is(JSON.parse(e.stdout).objectsNew, 4);
  // without --reflink the same store copies (a clone is read back from disk to be hashed, on
  // one thread: slower on a cold cache), and --reflink is for a directory tree only
  const plain = cfs(['build', '--rootfs', tree, '-o', path.join(d, 'p.ub'), '--store', path.join(mnt, 'store-plain'), '--json']);
  t.is(plain.code, 0, plain.stderr);
  t.false('objectsCloned' in JSON.parse(plain.stdout));
  t.false(shared(objectPath(path.join(mnt, 'store-plain'), verityDigest(contents['d/huge']))));
  const wrong = cfs(['build', path.join(d, 'nothing.tar'), '--reflink', '-o', path.join(d, 'w.ub'), '--store', apart]);
  t.is(wrong.stderr, 'cfs: --reflink goes with --rootfs (it clones the files of a directory tree)\n');
});

test('stores: a store that fills up (ENOSPC: out of inodes, which free bytes do not show) passes the next objects to the other store', async (t) => {
  const d = tmpdir(t);
  const contents = Array.from({ length: 120 }, (_, i) => crypto.randomBytes(1000 + i));
  const image = ociLayout(t, [tar(contents.map((c, i) => file(`f${i}`, c)))], { compression: 'none' });
  // a: the most free bytes, but 40 inodes (its fan-out directories and objects use them up); b: room
  const [a, b] = tmpfsStores(t, d, 'size=64m,nr_inodes=40', 'size=16m');
  const summary = await buildImage({ image, out: path.join(d, 'out.ub'), stores: [a, b] });
  t.is(summary.objectsNew, 120);
  t.true(objectsIn(a) > 0, 'the roomier store took objects until it was full');
  t.true(objectsIn(b) > 0, 'the other took the rest');
  t.is(objectsIn(a) + objectsIn(b), 120);
  t.is(await checkStore(t, a, b), 120);
  // no temp file left behind by the refused writes
  t.deepEqual(fs.readdirSync(path.join(a, 'objects')).filter((f) => !/^[0-9a-f]{2}$/.test(f)), []);
});

test('stores: a streamed content (over 8 MiB) whose store is out of inodes goes to the other store', async (t) => {
  const d = tmpdir(t);
  const small = Array.from({ length: 60 }, (_, i) => crypto.randomBytes(1000 + i));
  const big = crypto.randomBytes((9 << 20) + 123);
  const image = ociLayout(t, [tar([...small.map((c, i) => file(`f${i}`, c)), file('big', big)])], { compression: 'none' });
  // a: the most free bytes, so the main thread names the big content's temp file there; no inodes left by then
  const [a, b] = tmpfsStores(t, d, 'size=64m,nr_inodes=40', 'size=32m');
  const summary = await buildImage({ image, out: path.join(d, 'out.ub'), stores: [a, b] });
  t.is(summary.objectsNew, 61);
  t.true(fs.existsSync(objectPath(b, verityDigest(big))), 'the big content is an object of b');
  t.is(await checkStore(t, a, b), 61);
  for (const s of [a, b]) t.deepEqual(fs.readdirSync(path.join(s, 'objects')).filter((f) => !/^[0-9a-f]{2}$/.test(f)), [], `no temp file left in ${s}`);
});

test('stores: a streamed content whose store fills up mid-way moves, with the bytes written so far, to the other store', async (t) => {
  const d = tmpdir(t);
  const [a, b] = tmpfsStores(t, d, 'size=24m', 'size=16m');
  const w = new StoreWriter([a, b], { startNow: true });
  // The writer saw a as the roomier store; another program then takes 20 of its 24 MiB.
  const other = crypto.randomBytes(20 << 20);
  fs.writeFileSync(path.join(a, 'other-program'), other);
  const big = crypto.randomBytes((10 << 20) + 4097);
  async function* chunks() {
    for (let at = 0; at < big.length; at += 1 << 20) yield big.subarray(at, at + (1 << 20));
  }
  const digest = await w.putStream(chunks(), big.length);
  await w.sync();
  await w.close();
  t.deepEqual(digest, verityDigest(big));
  t.true(fs.readFileSync(objectPath(b, digest)).equals(big), 'the object in b holds every byte, those written to a first included');
  t.false(fs.existsSync(objectPath(a, digest)));
  t.true(fs.readFileSync(path.join(a, 'other-program')).equals(other));
  t.is(w.stats.objectsNew, 1);
  for (const s of [a, b]) t.deepEqual(fs.readdirSync(path.join(s, 'objects')).filter((f) => !/^[0-9a-f]{2}$/.test(f)), [], `no temp file left in ${s}`);
  // Both full: the error stands, and no temp file is left anywhere.
  const w2 = new StoreWriter([a, b], { startNow: true });
  const huge = crypto.randomBytes(12 << 20);
  async function* hugeChunks() {
    for (let at = 0; at < huge.length; at += 1 << 20) yield huge.subarray(at, at + (1 << 20));
  }
  await t.throwsAsync(w2.putStream(hugeChunks(), huge.length), { message: /ENOSPC|no space/i });
  await w2.abort();
  for (const s of [a, b]) t.deepEqual(fs.readdirSync(path.join(s, 'objects')).filter((f) => !/^[0-9a-f]{2}$/.test(f)), [], `no temp file left in ${s} after the failure`);
});

test('stores: the digest fast paths (one block; one Merkle level up to 512 KiB) equal the general fs-verity digest', (t) => {
  // The reference: format/verity.ts's streaming VerityHasher, fed in uneven chunks.
  const reference = (b) => {
    const h = new VerityHasher();
    for (let at = 0, step = 1; at < b.length; at += step, step = step * 3 + 1) h.update(b.subarray(at, at + step));
    return h.digest();
  };
  for (const n of [0, 1, 2, 63, 64, 65, 511, 4095, 4096, 4097, 8192, 100_000, 524_287, 524_288, 524_289, 528_384]) {
    const b = crypto.randomBytes(n);
    t.deepEqual(hashBufferJs(b), reference(b), `${n} bytes`);
    t.deepEqual(hashBufferJs(Buffer.alloc(n)), reference(Buffer.alloc(n)), `${n} zero bytes`);
  }
});

test('stores: the addon fs-verity digest (node OpenSSL, mounter/fuse/verity.c) is the one hashBuffer uses, and equals node:crypto for every tree shape', (t) => {
  const native = nativeVerityDigest();
  t.truthy(native, 'the addon is built (npm run build) and has verityDigest');
  const reference = (b) => {
    const h = new VerityHasher();
    for (let at = 0; at < b.length; at += 1 << 20) h.update(b.subarray(at, at + (1 << 20)));
    return h.digest();
  };
  // one block; one level (2..128 blocks); two levels (up to 128 * 128 blocks = 64 MiB); three
  const sizes = [0, 1, 4095, 4096, 4097, 524_288, 524_289, 3_000_000, (64 << 20) - 1, 64 << 20, (64 << 20) + 1];
  const big = crypto.randomBytes((64 << 20) + 1);
  for (const n of sizes) {
    const b = big.subarray(0, n);
    const out = Buffer.alloc(32);
    native(b, out);
    const want = n <= 528_384 ? hashBufferJs(b) : reference(b);
    t.deepEqual(out, want, `${n} bytes`);
    t.deepEqual(hashBuffer(b), want, `${n} bytes through hashBuffer`);
  }
  t.throws(() => native(big, Buffer.alloc(31)), { message: /32 bytes/ });
  t.throws(() => native('text', Buffer.alloc(32)), { instanceOf: TypeError });
});

test('stores: the streaming hasher with the addon hashing its first level equals `fsverity digest` and node:crypto, whatever the chunks', (t) => {
  const blocks = nativeBlockHasher();
  t.truthy(blocks, 'the addon is built (npm run build) and has verityBlockHashes');
  const dir = tmpdir(t);
  // one block; one level; two levels (the 64 MiB edge); a chunk boundary inside a block, on
  // a block edge, chunks smaller than a block, a hole in the middle, a 1 MiB call boundary
  const big = crypto.randomBytes((64 << 20) + 4097);
  const cases = [
    { n: 1, chunks: [1] },
    { n: 4096, chunks: [4096] },
    { n: 4097, chunks: [100, 3996, 1] },
    { n: 524_289, chunks: [4095, 1, 520_193] },
    { n: (1 << 20) + 8192, chunks: [(1 << 20) + 8192] },
    { n: 3_000_000, chunks: [7, 4096 * 300 + 5, 1_771_188] },
    { n: 64 << 20, chunks: [64 << 20] },
    { n: (64 << 20) + 4097, chunks: [(32 << 20) + 1, (32 << 20) - 1, 4097] },
  ];
  for (const { n, chunks } of cases) {
    t.is(chunks.reduce((a, b) => a + b, 0), n);
    const data = big.subarray(0, n);
    const native = new VerityHasher(blocks);
    const js = new VerityHasher();
    for (let at = 0, k = 0; k < chunks.length; at += chunks[k++]) {
      native.update(data.subarray(at, at + chunks[k]));
      js.update(data.subarray(at, at + chunks[k]));
    }
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, data);
    const want = execFileSync('fsverity', ['digest', file]).toString().trim().split(' ')[0];
    t.is(`sha256:${native.digest().toString('hex')}`, want, `${n} bytes in chunks ${chunks}`);
    t.is(`sha256:${js.digest().toString('hex')}`, want, `${n} bytes, node:crypto`);
  }
  // holes between data runs (sparse objects): zeros then data not aligned to blocks
  const native = new VerityHasher(blocks);
  const js = new VerityHasher();
  for (const h of [native, js]) {
    h.update(big.subarray(0, 10_000));
    h.updateZeros((1 << 20) + 123);
    h.update(big.subarray(10_000, (2 << 20) + 10_000));
  }
  t.deepEqual(native.digest(), js.digest(), 'data, a hole, data');
  t.throws(() => blocks(big.subarray(0, 8192), Buffer.alloc(63)), { message: /32 bytes per whole block/ });
  t.is(blocks(big.subarray(0, 8191), Buffer.alloc(32)), 1, 'a trailing partial block is not hashed');
});

test('stores: a batch hashed by the main thread (writer behind) or by the writer thread gives the same digests and objects', async (t) => {
  const contents = [];
  for (let i = 0; i < 300; i++) contents.push(crypto.randomBytes([65, 4096, 4097, 70_000, 600_000][i % 5] + i));
  contents.push(contents[7]); // a duplicate within the batches
  const stored = [];
  for (const behind of [0, Infinity]) {
    const store = path.join(tmpdir(t), 'store');
    // small batches: many of them, each hashed where `behind` says
    const w = new StoreWriter([store], { writerBehindBatches: behind, batchObjects: 16, startNow: true });
    try {
      const slots = [];
      for (const c of contents) slots.push(await w.putBuffer(c));
      await w.sync();
      t.is(w.stats.objectsNew, contents.length - 1, `writerBehindBatches ${behind}`);
      slots.forEach((d, i) => t.deepEqual(Buffer.from(d), verityDigest(contents[i]), `digest ${i}, writerBehindBatches ${behind}`));
      for (const [i, c] of contents.entries()) t.true(fs.readFileSync(objectPath(store, slots[i])).equals(c));
    } finally {
      await w.close();
    }
    stored.push(fs.readdirSync(path.join(store, 'objects'), { recursive: true }).sort());
  }
  t.deepEqual(stored[0], stored[1]);
});

test.serial('stores: StoreWriters in turn share one writer thread, and nothing of the previous one carries over', async (t) => {
  const dir = tmpdir(t);
  const [a, b] = [path.join(dir, 'a'), path.join(dir, 'b')];
  const same = crypto.randomBytes(5000);
  const other = crypto.randomBytes(70_000);
  const w1 = new StoreWriter([a], { startNow: true });
  const d1 = await w1.putBuffer(same);
  await w1.sync();
  const thread = w1.threadId;
  await w1.close();
  t.is(w1.stats.objectsNew, 1);
  t.not(thread, null);
  const w2 = new StoreWriter([b], { startNow: true });
  t.is(w2.threadId, thread); // the idle thread, not a new one
  const d2 = await w2.putBuffer(same);
  const d3 = await w2.putBuffer(other);
  await w2.sync();
  await w2.close();
  // what the thread saw for w1 is not taken as present for w2: both contents are written, into b
  t.is(w2.stats.objectsNew, 2);
  t.is(w2.stats.objectsPresent, 0);
  t.deepEqual(Buffer.from(d2), Buffer.from(d1));
  t.true(fs.readFileSync(objectPath(b, d2)).equals(same));
  t.true(fs.readFileSync(objectPath(b, d3)).equals(other));
  t.false(fs.existsSync(objectPath(a, d3)));
  // writers closed at once: one thread is kept, the others end (each close() returns)
  const many = [0, 1, 2].map(() => new StoreWriter([b], { startNow: true }));
  const ids = many.map((w) => w.threadId);
  await Promise.all(many.map(async (w, i) => {
    await w.putBuffer(Buffer.from(`content ${i} `.repeat(20)));
    await w.flush();
  }));
  await Promise.all(many.map((w) => w.close()));
  const next = new StoreWriter([b], { startNow: true });
  const parked = next.threadId;
  t.true(ids.includes(parked));
  await next.close();
  // a writer thread that failed is not kept for the next writer
  // (its first store is gone by the time it writes: the thread's object write fails)
  const w3 = new StoreWriter([path.join(dir, 'c'), b], { startNow: true, tmpfile: false });
  const failed = w3.threadId;
  t.is(failed, parked);
  fs.rmSync(path.join(dir, 'c'), { recursive: true });
  await w3.putBuffer(crypto.randomBytes(3000));
  await t.throwsAsync(() => w3.flush());
  await w3.close();
  const w4 = new StoreWriter([b], { startNow: true });
  t.not(w4.threadId, failed);
  await w4.close();
});

test('stores: stale temp files of dead builds are removed, live or recent ones are kept', async (t) => {
  const store = path.join(tmpdir(t), 'store');
  fs.mkdirSync(path.join(store, 'objects'), { recursive: true });
  const old = (Date.now() - 3600_000) / 1000;
  const mk = (name, mtime) => {
    const p = path.join(store, 'objects', name);
    fs.writeFileSync(p, 'partial');
    if (mtime) fs.utimesSync(p, mtime, mtime);
    return name;
  };
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  mk(`.tmp-${dead}-aaaa`, old);
  const recentDead = mk(`.tmp-${dead}-bbbb`);
  const live = mk(`.tmp-${process.pid}-cccc`, old);
  t.is(cleanStaleTemps(store), 1);
  t.deepEqual(temps(store).sort(), [recentDead, live].sort());
});

// ==========================================================================================
// The command line: errors are one line, leave no OUT and a consistent store

/** Run `cfs build` on an image that must fail; check the error contract; returns stderr. */
async function buildFails(t, image, re, { preexisting = false } = {}) {
  const d = tmpdir(t);
  const out = path.join(d, 'out.ub');
  const store = path.join(d, 'store');
  if (preexisting) fs.writeFileSync(out, 'previous blob');
  const r = cfs(['build', image, '-o', out, '--store', store]);
  t.is(r.code, 1, `exit status for ${image} (stderr: ${r.stderr})`);
  t.is(r.stdout, '');
  t.regex(r.stderr, /^cfs: [^\n]*\n$/, 'exactly one line');
  t.regex(r.stderr.trimEnd(), re);
  if (preexisting) t.is(fs.readFileSync(out, 'utf8'), 'previous blob', 'an existing OUT is untouched');
  else t.false(fs.existsSync(out), 'no OUT');
  t.deepEqual(fs.readdirSync(d).filter((n) => n.startsWith('out.ub.')), [], 'no temp blob');
  await checkStore(t, store);
  t.deepEqual(temps(store), [], 'no temp objects');
  return r.stderr;
}

/** A first layer with some objects, so failures happen after the store was written to. */
const goodLayer = () => tar(Array.from({ length: 20 }, (_, i) => file(`obj/${i}`, `${i}`.repeat(100 + i))));
const short = (buf) => sha256(buf).slice(7, 19);

test('cli: build --json prints a summary; stderr stays silent when it is not a terminal', async (t) => {
  const d = tmpdir(t);
  const image = ociLayout(t, [goodLayer(), tar([file('x', 'y')])], { tag: 'v1' });
  const r = cfs(['build', `${image}:v1`, '-o', path.join(d, 'x.ub'), '--store', path.join(d, 's'), '--json']);
  t.is(r.code, 0, r.stderr);
  t.is(r.stderr, '');
  const s = JSON.parse(r.stdout);
  t.deepEqual(Object.keys(s).sort(), ['blobBytes', 'bytes', 'digest', 'entries', 'inlineFiles', 'inodes', 'layers', 'objectsNew', 'objectsPresent', 'out', 'seconds'].sort());
  t.is(s.out, path.join(d, 'x.ub'));
  t.is(s.digest, verityDigest(fs.readFileSync(path.join(d, 'x.ub'))).toString('hex'), "the blob's fs-verity digest");
  t.is(s.objectsNew, 20);
  t.is(s.layers, 2);
  t.is(s.blobBytes, fs.statSync(path.join(d, 'x.ub')).size);
  const again = cfs(['build', `${image}:v1`, '-o', path.join(d, 'y.ub'), '--store', path.join(d, 's')]);
  t.is(again.code, 0);
  t.is(again.stdout, '', 'no --json: nothing on stdout');
  t.true(fs.readFileSync(path.join(d, 'x.ub')).equals(fs.readFileSync(path.join(d, 'y.ub'))), 'reproducible');
  t.is(cfs(['build', image, '-o', path.join(d, 'z.ub')]).code, 1, '--store is required');
});

test('cli: build shows one progress line on a terminal (script(1) gives it a pty), overwritten in place and cleared at the end', (t) => {
  const d = tmpdir(t);
  const image = ociLayout(t, [goodLayer(), tar([file('x', 'y')])], { tag: 'v1' });
  const cmd = [process.execPath, CFS, 'build', `${image}:v1`, '-o', path.join(d, 'x.ub'), '--store', path.join(d, 's')]
    .map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const r = spawnSync('script', ['-qfec', cmd, '/dev/null'], { encoding: 'latin1', env: { ...process.env, COLUMNS: '200' } });
  t.is(r.status, 0, r.stdout + r.stderr);
  t.true(fs.existsSync(path.join(d, 'x.ub')));
  const updates = r.stdout.split('\r\x1b[K');
  t.true(updates.some((u) => /^layer 2\/2 {2}[0-9.]+\/[0-9.]+ MiB \(100%\) {2}\d+ entries {2}syncing objects$/.test(u)), JSON.stringify(r.stdout));
  t.true(updates.some((u) => /^layer 2\/2 .* {2}writing blob$/.test(u)), JSON.stringify(r.stdout));
  t.regex(r.stdout, /\r\x1b\[K$/, 'the line is cleared at the end');
  t.false(r.stdout.replace(/\r\n$/, '').includes('\n'), 'one line, never scrolled');
});

test('cli: digest mismatches (OCI stored digest, docker diff_id) name the layer', async (t) => {
  const bad = tar([file('a', 'x'.repeat(5000))]);
  for (const compression of ['gzip', 'none']) {
    const layout = ociLayout(t, [goodLayer(), bad], { compression });
    const blob = path.join(layout, 'blobs', 'sha256', sha256(compressWith(compression, bad)).slice(7));
    const bytes = fs.readFileSync(blob);
    bytes[Math.floor(bytes.length / 2)] ^= 0x55;
    fs.writeFileSync(blob, bytes);
    const err = await buildFails(t, layout, /layer digest mismatch: expected sha256:/, { preexisting: compression === 'gzip' });
    t.true(err.startsWith(`cfs: ${short(compressWith(compression, bad))}: `), err);
  }
  const docker = dockerArchive(t, [{ tars: [goodLayer(), bad] }]);
  const bytes = fs.readFileSync(docker);
  const at = bytes.indexOf(Buffer.from('x'.repeat(5000)));
  bytes[at + 10] = 0x79; // a content byte: the tar still parses, only the diff_id can tell
  fs.writeFileSync(docker, bytes);
  const err = await buildFails(t, docker, /diff_id mismatch/);
  t.true(err.startsWith(`cfs: ${short(bad)}: `), err);
});

test('cli: truncated, corrupt and unsupported layers, dangling hardlinks, bad paths', async (t) => {
  const full = tar([file('a', 'x'.repeat(3000)), file('b', 'y')]);
  const cut = (b, n) => b.subarray(0, b.length - n);
  const cases = [
    // [layer bytes, compression label, media type, expected stderr]
    [cut(zlib.gzipSync(full), 5), MT.gzip, /: unexpected end of file$/],
    [cut(zstdCompress(full), 5), MT.zstd, /: Stream ended in middle of compressed data frame$/],
    [full.subarray(0, 2048), MT.none, /: a: truncated archive$/],
    [full.subarray(0, 512 * 9), MT.none, /: truncated archive \(no end-of-archive marker\)$/],
    [tar([file('a', 'x'), file('b', 'x', { badChecksum: true })]), MT.none, /: the header after a: bad tar header checksum \(corrupt archive\?\)$/],
    [zlib.gzipSync(full), 'application/vnd.oci.image.layer.v1.tar+bzip2', /: unsupported media type application\/vnd\.oci\.image\.layer\.v1\.tar\+bzip2$/],
    [tar([{ path: 'usr/bin/h', type: 'hardlink', linkname: 'usr/bin/gone' }]), MT.none, /: usr\/bin\/h: hardlink target usr\/bin\/gone does not exist$/],
    [tar([file('../../etc/shadow', 'x')]), MT.none, /: \.\.\/\.\.\/etc\/shadow: path contains a "\.\." component \(refused\)$/],
    [tar([file('f', 'x'), file('f/passwd', 'x')]), MT.none, /: f\/passwd: f is not a directory$/],
  ];
  for (const [bytes, mediaType, re] of cases) {
    const layout = path.join(tmpdir(t), 'layout');
    fs.mkdirSync(layout);
    const g = goodLayer();
    const layers = [putBlob(layout, zlib.gzipSync(g), MT.gzip), putBlob(layout, bytes, mediaType)];
    const config = putBlob(layout, Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [sha256(g), sha256(full)] } })), 'application/vnd.oci.image.config.v1+json');
    const manifest = putBlob(layout, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers })), 'application/vnd.oci.image.manifest.v1+json');
    writeLayout(layout, [manifest]);
    const err = await buildFails(t, layout, re);
    t.true(err.startsWith(`cfs: ${short(bytes)}: `), err);
  }
  const layout = ociLayout(t, [goodLayer()], { compression: 'none' });
  fs.rmSync(path.join(layout, 'blobs', 'sha256', sha256(goodLayer()).slice(7)));
  await buildFails(t, layout, new RegExp(`^cfs: ${short(goodLayer())}: layer blob not found in the image$`));
  await buildFails(t, path.join(tmpdir(t), 'missing.tar'), /^cfs: .*missing\.tar: no such file or directory$/);
  const notTar = path.join(tmpdir(t), 'x.tar');
  fs.writeFileSync(notTar, crypto.randomBytes(2048));
  await buildFails(t, notTar, /not a readable tar archive/);
});

// ==========================================================================================
// Crash safety

test('crash: builds killed with SIGKILL at random moments never corrupt the store', async (t) => {
  // Enough objects (small ones written asynchronously, big ones streamed) to keep writing busy.
  const rnd = (n) => crypto.randomBytes(n);
  const files = Array.from({ length: 600 }, (_, i) => file(`f/${i}`, rnd(100 + ((i * 7919) % 60000))));
  const bigs = [file('big1', rnd(10 << 20)), file('big2', rnd(12 << 20))];
  const image = ociLayout(t, [tar(files.slice(0, 300)), tar([bigs[0], ...files.slice(300), bigs[1]])], { compression: 'none' });
  const d = tmpdir(t);
  const started = Date.now();
  t.is(cfs(['build', image, '-o', path.join(d, 'timing.ub'), '--store', path.join(d, 'timing')]).code, 0);
  const duration = Date.now() - started;
  const stores = [];
  let completed = 0;
  for (let i = 0; i < 20; i++) {
    if (i % 5 === 0) stores.push(path.join(d, `store${i}`));
    const store = stores[stores.length - 1];
    const out = path.join(d, 'out.ub'); // the same OUT every time: always absent, old or new, never partial
    const child = spawn(process.execPath, [CFS, 'build', image, '-o', out, '--store', store], { stdio: 'ignore' });
    const delay = Math.random() * duration;
    const timer = setTimeout(() => child.kill('SIGKILL'), delay);
    const signal = await new Promise((resolve) => child.on('exit', (_code, sig) => resolve(sig)));
    clearTimeout(timer);
    if (signal !== 'SIGKILL') completed++;
    if (fs.existsSync(out)) dumpOf(fs.readFileSync(out)); // if OUT exists, it is a complete blob
    else t.is(signal, 'SIGKILL', 'a build that was not killed wrote OUT');
    await checkStore(t, store);
  }
  for (const store of stores) {
    const r = cfs(['build', image, '-o', path.join(d, 'out.ub'), '--store', store, '--json']);
    t.is(r.code, 0, r.stderr);
    await checkStore(t, store);
    t.true(fs.readFileSync(path.join(d, 'out.ub')).equals(fs.readFileSync(path.join(d, 'timing.ub'))));
  }
  t.deepEqual(fs.readdirSync(d).filter((n) => n.includes('.tmp-')), [], 'temp blobs of killed builds were removed');
  t.log(`full build ${duration} ms; ${20 - completed} of 20 builds killed before the end`);
});
