// Hostile images (issue #6): tarballs built here byte by byte, fed to `cfs build` and the
// blobs that come out to `cfs extract`. Each case must end in a one-line error with a non-zero
// exit and no output, or in a blob whose tree is what OCI layer semantics say. Every run happens
// in its own sandbox (fresh cwd and TMPDIR) that is listed afterwards: nothing may appear outside
// the output and the store, or outside DEST for extract. Peak RSS of the child comes from
// /usr/bin/time (a generous bound: we look for "unbounded", not for regressions).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { encodeBlob } from '../dist/format/index.js';
import { ustarHeader } from './lib/ustar.mjs';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const CFS = path.join(ROOT, 'bin', 'cfs');
const TIME = '/usr/bin/time';
const MARK = 'PWNED'; // every name a traversal would write outside carries it
const WORK = fs.mkdtempSync(path.join(process.env.UB_TEST_TMP ?? os.tmpdir(), 'ub-hostile-'));

test.after.always(() => {
  if (!process.env.UB_KEEP) fs.rmSync(WORK, { recursive: true, force: true });
});

// ---- tar, written by hand so every field can lie --------------------------------------------

const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', dir: '5' };

/** One 512-byte ustar header; `size` is what the header claims, whatever follows. */
function header({ name, type = 'file', size = 0, linkname = '', mode = type === 'dir' ? 0o755 : 0o644, typeflag }) {
  return ustarHeader({ name, size, mode, linkname, typeflag: typeflag ?? TYPEFLAG[type] });
}

function pad(body) {
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/** A PAX 'x' header carrying records (for paths and link targets over 100 bytes). */
function pax(records) {
  const body = Buffer.concat(Object.entries(records).map(([k, v]) => {
    const rest = ` ${k}=${v}\n`;
    let len = rest.length + 1;
    while (String(len).length + rest.length !== len) len++;
    return Buffer.from(len + rest, 'latin1');
  }));
  return Buffer.concat([header({ name: 'PaxHeader', typeflag: 'x', size: body.length }), pad(body)]);
}

/** Tar entry: { name, type, body?, linkname?, size? } -> header (+ PAX) + padded body. */
function entry(e) {
  const body = e.body === undefined ? Buffer.alloc(0) : Buffer.from(e.body);
  const long = {};
  if (Buffer.byteLength(e.name, 'latin1') > 100) long.path = e.name;
  if ((e.linkname ?? '').length > 100) long.linkpath = e.linkname;
  const size = e.size ?? body.length;
  return Buffer.concat([
    Object.keys(long).length ? pax(long) : Buffer.alloc(0),
    header({ ...e, name: long.path ? 'long' : e.name, linkname: long.linkpath ? 'long' : e.linkname, size }),
    pad(body),
  ]);
}

const EOA = Buffer.alloc(1024);

function tar(entries) {
  return Buffer.concat([...entries.map(entry), EOA]);
}

// ---- OCI layout -----------------------------------------------------------------------------

const sha256 = (b) => createHash('sha256').update(b).digest('hex');

function putBlob(dir, data) {
  const hex = sha256(data);
  fs.writeFileSync(path.join(dir, 'blobs', 'sha256', hex), data);
  return hex;
}

/**
 * An OCI layout of the given layers. A layer is a Buffer (uncompressed tar), or
 * { file, mediaType } for a layer written elsewhere (large), or { missing: true }, or
 * { lie: Buffer } (stored under the digest of other bytes).
 */
function ociImage(dir, layers) {
  fs.mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const descs = layers.map((l, i) => {
    let data = l;
    let mediaType = 'application/vnd.oci.image.layer.v1.tar';
    if (l.file) {
      mediaType = l.mediaType;
      const hash = createHash('sha256');
      const fd = fs.openSync(l.file, 'r');
      const chunk = Buffer.alloc(1 << 20);
      for (let n; (n = fs.readSync(fd, chunk)) > 0;) hash.update(chunk.subarray(0, n));
      fs.closeSync(fd);
      const hex = hash.digest('hex');
      fs.renameSync(l.file, path.join(dir, 'blobs', 'sha256', hex));
      return { mediaType, digest: `sha256:${hex}`, size: fs.statSync(path.join(dir, 'blobs', 'sha256', hex)).size };
    }
    if (l.missing) return { mediaType, digest: `sha256:${sha256(`missing ${i}`)}`, size: 1024 };
    if (l.lie) {
      const claimed = sha256(Buffer.concat([l.lie, Buffer.from('x')]));
      fs.writeFileSync(path.join(dir, 'blobs', 'sha256', claimed), l.lie);
      return { mediaType, digest: `sha256:${claimed}`, size: l.lie.length };
    }
    return { mediaType, digest: `sha256:${putBlob(dir, data)}`, size: data.length };
  });
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux',
    rootfs: { type: 'layers', diff_ids: descs.map((d) => d.digest) },
  }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${putBlob(dir, config)}`, size: config.length },
    layers: descs,
  }));
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${putBlob(dir, manifest)}`, size: manifest.length }],
  }));
  return dir;
}

// ---- running cfs in a sandbox ---------------------------------------------------------------

/** Every path under dir (relative), directories included, symlinks not followed. */
function listTree(dir) {
  const out = [];
  const walk = (rel) => {
    for (const d of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, d.name);
      out.push(r);
      if (d.isDirectory()) walk(r);
    }
  };
  walk('');
  return out.sort();
}

let nsandbox = 0;

/** A fresh sandbox: image/, cwd/, tmp/, out/ (store in out/store). */
function sandbox(name) {
  const dir = path.join(WORK, `${nsandbox++}-${name}`);
  for (const d of ['image', 'cwd', 'tmp', 'out']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  return dir;
}

/** Run cfs with args in the sandbox; { status, err (stderr without our RSS line), rssMiB }. */
function cfs(box, args, timeoutMs = 10 * 60_000) {
  const r = spawnSync(TIME, ['-f', 'UB-RSS-KB=%M', process.execPath, CFS, ...args], {
    cwd: path.join(box, 'cwd'),
    env: { ...process.env, TMPDIR: path.join(box, 'tmp') },
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 << 20,
  });
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  const rss = lines.findLast((l) => l.startsWith('UB-RSS-KB='));
  if (!rss) throw new Error(`no RSS from ${TIME} (${r.signal ?? r.status}): ${r.stderr.slice(-2000)}`);
  return {
    status: r.status,
    stdout: r.stdout,
    err: lines.filter((l) => !l.startsWith('UB-RSS-KB=') && !l.startsWith('Command exited with non-zero status')),
    rssMiB: Number(rss.slice(10)) / 1024,
  };
}

/** Nothing anywhere in the sandbox but the image, the output blob, the store, DEST. */
function assertConfined(t, box, { dest } = {}) {
  const allowed = (p) =>
    p.startsWith('image') || p === 'out' || p === 'out/img.ub' || p === 'out/store' || p.startsWith('out/store/') ||
    p === 'cwd' || p === 'tmp' || (dest && (p === dest || p.startsWith(dest + '/')));
  const stray = listTree(box).filter((p) => !allowed(p));
  t.deepEqual(stray, [], 'files outside the output, store and DEST');
  for (const p of [`/${MARK}`, `/tmp/${MARK}`, path.join(WORK, MARK), path.join(box, MARK)]) {
    t.false(fs.existsSync(p), `${p} was written`);
  }
}

/** cfs build of the sandbox's image; asserts the outcome, returns the run. */
function build(t, box, { error, maxRssMiB = 400, timeoutMs } = {}) {
  const out = path.join(box, 'out', 'img.ub');
  const r = cfs(box, ['build', path.join(box, 'image'), '-o', out, '--store', path.join(box, 'out', 'store')], timeoutMs);
  t.log(`peak RSS ${r.rssMiB.toFixed(0)} MiB${r.err.length ? `; ${r.err.join(' | ')}` : ''}`);
  if (error) {
    t.not(r.status, 0, 'exit status');
    t.is(r.err.length, 1, `one line of error, got: ${r.err.join('\n')}`);
    t.regex(r.err[0] ?? '', error);
    t.false(fs.existsSync(out), 'no blob written');
  } else {
    t.is(r.status, 0, r.err.join('\n'));
    t.true(fs.existsSync(out));
  }
  t.true(r.rssMiB < maxRssMiB, `peak RSS ${r.rssMiB.toFixed(0)} MiB >= ${maxRssMiB} MiB`);
  assertConfined(t, box);
  return r;
}

/** `cfs dump` lines of the built blob, by path (the first field). */
function dump(box) {
  const r = spawnSync(process.execPath, [CFS, 'dump', path.join(box, 'out', 'img.ub')], { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(r.stderr);
  return r.stdout.split('\n').filter((l) => l.startsWith('/'));
}

/** cfs extract of the built blob into box/dest; asserts nothing lands outside it. */
function extract(t, box, blob = path.join(box, 'out', 'img.ub')) {
  const r = cfs(box, ['extract', blob, '--store', path.join(box, 'out', 'store'), path.join(box, 'dest')]);
  assertConfined(t, box, { dest: 'dest' });
  return r;
}

// ---- the cases ------------------------------------------------------------------------------

const file = (name, body = 'x\n') => ({ name, body });
const dir = (name) => ({ name, type: 'dir' });
const symlink = (name, linkname) => ({ name, type: 'symlink', linkname });
const hardlink = (name, linkname) => ({ name, type: 'hardlink', linkname });

test('path traversal with "..": refused, nothing written outside', (t) => {
  for (const name of [`../${MARK}`, `a/../../${MARK}`, `./../${MARK}`]) {
    const box = sandbox('dotdot');
    ociImage(path.join(box, 'image'), [tar([file(name)])]);
    build(t, box, { error: /: path contains a "\.\." component \(refused\)$/ });
  }
});

test('absolute paths are confined to the image root', (t) => {
  const box = sandbox('absolute');
  ociImage(path.join(box, 'image'), [tar([file(`/${MARK}/f`, 'abs\n'), symlink(`//${MARK}/l`, '/etc/passwd')])]);
  build(t, box);
  const paths = dump(box).map((l) => l.split(' ')[0]);
  t.true(paths.includes(`/${MARK}/f`) && paths.includes(`/${MARK}/l`), paths.join(' '));
  const r = extract(t, box);
  t.is(r.status, 0, r.err.join('\n'));
  t.is(fs.readFileSync(path.join(box, 'dest', MARK, 'f'), 'utf8'), 'abs\n');
  t.is(fs.readlinkSync(path.join(box, 'dest', MARK, 'l')), '/etc/passwd');
});

test('a symlink planted in a lower layer is followed inside the image only, as containerd and umoci resolve it', (t) => {
  const box = sandbox('planted');
  const outside = path.join(box, 'cwd');
  ociImage(path.join(box, 'image'), [
    tar([symlink('evil', outside), symlink('rel', '../../../..')]),
    tar([file(`evil/${MARK}`), dir('rel/sub'), file(`rel/sub/${MARK}`), hardlink(`rel/${MARK}-link`, `evil/${MARK}`)]),
  ]);
  build(t, box); // and nothing was written outside (assertConfined)
  const paths = dump(box).map((l) => l.split(' ')[0]);
  // the absolute target is a path of the image; ".." stops at the image's root
  for (const p of [`${outside}/${MARK}`, `/sub/${MARK}`, `/${MARK}-link`]) t.true(paths.includes(p), `${p} in ${paths.join(' ')}`);
  const r = extract(t, box);
  t.is(r.status, 0, r.err.join('\n'));
  t.true(fs.existsSync(path.join(box, 'dest', outside, MARK)));
  t.true(fs.existsSync(path.join(box, 'dest', 'sub', MARK)));
});

test('hardlinks: to outside refused, absolute ones name the image file, to a whiteout refused', (t) => {
  let box = sandbox('hardlink-dotdot');
  ociImage(path.join(box, 'image'), [tar([hardlink('h', '../../../../etc/passwd')])]);
  build(t, box, { error: /: h: path contains a "\.\." component \(refused\)$/ });

  box = sandbox('hardlink-host-file');
  ociImage(path.join(box, 'image'), [tar([hardlink('h', '/etc/passwd')])]);
  build(t, box, { error: /: h: hardlink target \/etc\/passwd does not exist$/ });

  box = sandbox('hardlink-absolute');
  ociImage(path.join(box, 'image'), [tar([dir('etc'), file('etc/passwd', 'image passwd\n'), hardlink('h', '/etc/passwd')])]);
  build(t, box);
  const lines = dump(box);
  const ino = (p) => lines.find((l) => l.startsWith(`${p} `))?.split(' ')[1];
  t.is(ino('/h'), ino('/etc/passwd'), 'one inode');
  const r = extract(t, box);
  t.is(r.status, 0, r.err.join('\n'));
  t.is(fs.readFileSync(path.join(box, 'dest', 'h'), 'utf8'), 'image passwd\n');
  t.is(fs.statSync(path.join(box, 'dest', 'h')).ino, fs.statSync(path.join(box, 'dest', 'etc', 'passwd')).ino);

  box = sandbox('hardlink-whiteout');
  ociImage(path.join(box, 'image'), [tar([file('a')]), tar([file('.wh.a'), hardlink('b', '.wh.a')])]);
  build(t, box, { error: /: b: hardlink target \.wh\.a does not exist$/ });
  box = sandbox('hardlink-whited-out');
  ociImage(path.join(box, 'image'), [tar([file('a')]), tar([file('.wh.a'), hardlink('b', 'a')])]);
  build(t, box, { error: /: b: hardlink target a does not exist$/ });
  box = sandbox('hardlink-dir');
  ociImage(path.join(box, 'image'), [tar([dir('d'), hardlink('b', 'd')])]);
  build(t, box, { error: /: b: hardlink target d is a directory$/ });
});

test('symlink loops are kept as symlinks, and extract never follows them', (t) => {
  const box = sandbox('loops');
  ociImage(path.join(box, 'image'), [tar([
    symlink('l1', 'l2'), symlink('l2', 'l1'), symlink('self', 'self'), dir('d'), symlink('d/up', '..'),
    symlink('d/out', `../../../../${MARK}`), file('d/f', 'f\n'), hardlink('d/h', 'l1'),
  ])]);
  build(t, box);
  const lines = dump(box);
  for (const p of ['/l1', '/l2', '/self', '/d/up', '/d/out', '/d/h']) t.truthy(lines.find((l) => l.startsWith(`${p} `)), p);
  const r = extract(t, box);
  t.is(r.status, 0, r.err.join('\n'));
  t.is(fs.readlinkSync(path.join(box, 'dest', 'l1')), 'l2');
  t.is(fs.readlinkSync(path.join(box, 'dest', 'd', 'h')), 'l2', 'a hardlink to a symlink is that symlink');
  t.is(fs.readlinkSync(path.join(box, 'dest', 'd', 'out')), `../../../../${MARK}`);
});

test('names: 255 bytes fine, 256 refused', (t) => {
  let box = sandbox('name255');
  const n255 = 'n'.repeat(255);
  ociImage(path.join(box, 'image'), [tar([dir(n255), file(`${n255}/${n255}`)])]);
  build(t, box);
  t.truthy(dump(box).find((l) => l.startsWith(`/${n255}/${n255} `)));
  const r = extract(t, box);
  t.is(r.status, 0, r.err.join('\n'));
  t.true(fs.existsSync(path.join(box, 'dest', n255, n255)));

  box = sandbox('name256');
  ociImage(path.join(box, 'image'), [tar([file('n'.repeat(256))])]);
  build(t, box, { error: /path component longer than 255 bytes$/ });
});

test('1,000 levels of nesting build, dump and extract', (t) => {
  const box = sandbox('deep');
  const comps = Array.from({ length: 1000 }, (_, i) => `d${i % 10}`);
  ociImage(path.join(box, 'image'), [tar([file(`${comps.join('/')}/leaf`, 'deep\n')])]);
  build(t, box);
  t.truthy(dump(box).find((l) => l.startsWith(`/${comps.join('/')}/leaf `)));
  const r = extract(t, box);
  t.is(r.status, 0, r.err.join('\n'));
  t.is(fs.readFileSync(path.join(box, 'dest', ...comps, 'leaf'), 'utf8'), 'deep\n');
});

test('20,000 levels: built; extract stops with a clear PATH_MAX error and removes DEST', (t) => {
  const box = sandbox('deeper');
  const deep = Array.from({ length: 20_000 }, () => 'd').join('/');
  ociImage(path.join(box, 'image'), [tar([file(`${deep}/leaf`)])]);
  build(t, box, { maxRssMiB: 400 });
  t.is(dump(box).length, 20_002);
  const r = extract(t, box);
  t.not(r.status, 0);
  t.is(r.err.length, 1, r.err.join('\n'));
  t.regex(r.err[0], /^cfs: \/d\/d\/.{0,120}: path of \d+ bytes under DEST exceeds PATH_MAX \(4096\): cannot extract$/);
  t.false(fs.existsSync(path.join(box, 'dest')));
});

test('an error about a megabyte-long path is one short line', (t) => {
  const box = sandbox('long-error');
  const long = Array.from({ length: 100_000 }, () => 'dd').join('/');
  ociImage(path.join(box, 'image'), [tar([file('s', 'a file'), file(`s/${long}`), hardlink('h', `${long}/x`)])]);
  const r = build(t, box, { error: /: s\/dd\/dd.{0,220}: s is not a directory$/ });
  t.true(r.err[0].length < 400, `${r.err[0].length} characters`);
});

test('tar bombs: a huge declared size is a truncated archive, in small memory', (t) => {
  for (const [label, blocks] of [
    ['header size 8 GiB - 1', [header({ name: 'big', size: 0o77777777777 }), Buffer.alloc(1 << 20)]],
    ['PAX size 2^50', [pax({ size: String(2 ** 50) }), header({ name: 'big', size: 0 }), Buffer.alloc(1 << 20)]],
    ['size just below the in-memory limit', [header({ name: 'big', size: (8 << 20) - 1 }), Buffer.alloc(4096)]],
  ]) {
    const box = sandbox('bomb-size');
    t.log(label);
    ociImage(path.join(box, 'image'), [Buffer.concat(blocks)]);
    build(t, box, { error: /: truncated archive$/, maxRssMiB: 250 });
  }
});

test('tar bombs: a gzip layer of 1 GiB of zeros (a 256 MiB file, then endless end-of-archive blocks) in small memory', (t) => {
  const box = sandbox('bomb-zeros');
  const layer = path.join(box, 'layer.tar.gz');
  // Streamed straight into a file: the uncompressed tar is never in memory here either.
  const fd = fs.openSync(layer, 'w');
  const zeros = Buffer.alloc(1 << 20);
  const write = (b) => fs.writeSync(fd, zlib.gzipSync(b, { level: 1 }));
  write(header({ name: 'zeros', size: 256 << 20 }));
  for (let i = 0; i < 1024; i++) write(zeros); // 256 MiB body, then 768 MiB of zero blocks
  fs.closeSync(fd);
  ociImage(path.join(box, 'image'), [{ file: layer, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }]);
  build(t, box, { maxRssMiB: 300 });
  const line = dump(box).find((l) => l.startsWith('/zeros '));
  t.truthy(line);
  t.regex(line, new RegExp(` ${256 << 20} `));
});

/** A sparse file in PAX format 1.0 (GNU tar --sparse): the map text opens the body, then the data. */
function sparse10(name, realsize, mapText, data = Buffer.alloc(0)) {
  const body = Buffer.concat([pad(Buffer.from(mapText, 'latin1')), data]);
  return Buffer.concat([pax({ 'GNU.sparse.major': 1, 'GNU.sparse.minor': 0, 'GNU.sparse.name': name, 'GNU.sparse.realsize': realsize }),
    header({ name: `GNUSparseFile.0/${name}`, size: body.length }), pad(body)]);
}

test('sparse bombs: long map numbers, maps without an end, millions of runs, PAX headers over 1 MiB', (t) => {
  // a count with 8 MiB of leading zeros: valid (Go reads it); once read block by block in O(n^2)
  let box = sandbox('sparse-zeros');
  ociImage(path.join(box, 'image'), [Buffer.concat([sparse10('f', 10, `${'0'.repeat(8 << 20)}1\n3\n2\n`, Buffer.from('hi')), EOA])]);
  build(t, box, { maxRssMiB: 400, timeoutMs: 120_000 });
  t.regex(dump(box).find((l) => l.startsWith('/f ')), / 10 /);
  // 8 MiB of digits and no newline: the map runs past the data
  box = sandbox('sparse-nonl');
  ociImage(path.join(box, 'image'), [Buffer.concat([sparse10('f', 10, '1'.repeat(8 << 20)), EOA])]);
  build(t, box, { error: /the sparse map runs past the entry's data/, timeoutMs: 120_000 });
  // 2,000,000 runs of one byte over 40 MiB (a 23 MB layer): bounded memory (it took 1.4 GiB)
  box = sandbox('sparse-runs');
  const k = 2_000_000;
  const step = (40 << 20) / k;
  const runs = Array.from({ length: k }, (_, i) => `${Math.floor(step * i) + 5}\n1\n`).join('');
  ociImage(path.join(box, 'image'), [Buffer.concat([sparse10('f', 40 << 20, `${k}\n${runs}`, Buffer.alloc(k, 'r')), EOA])]);
  build(t, box, { maxRssMiB: 400, timeoutMs: 300_000 });
  t.regex(dump(box).find((l) => l.startsWith('/f ')), new RegExp(` ${40 << 20} `));
  // a 0.1 map in a PAX header of 2 MiB: Go refuses headers over 1 MiB, so must we
  box = sandbox('sparse-big-pax');
  const n = 150_000;
  const map = Array.from({ length: n }, (_, i) => `${3 * i + 1},1`).join(',');
  ociImage(path.join(box, 'image'), [Buffer.concat([pax({ 'GNU.sparse.size': 3 * n, 'GNU.sparse.numblocks': n, 'GNU.sparse.map': map }),
    header({ name: 'f', size: n }), pad(Buffer.alloc(n, 'y')), EOA])]);
  build(t, box, { error: /extended header of \d+ bytes is too large$/ });
});

test('a manifest pointing at a missing layer, and a layer whose digest lies', (t) => {
  let box = sandbox('missing-layer');
  ociImage(path.join(box, 'image'), [tar([file('a')]), { missing: true }]);
  build(t, box, { error: /layer blob not found in the image$/ });
  box = sandbox('lying-digest');
  ociImage(path.join(box, 'image'), [tar([file('a')]), { lie: tar([file(MARK, 'big '.repeat(1000))]) }]);
  build(t, box, { error: /digest/ });
});

test('10^6 entries in one directory: built in bounded memory', (t) => {
  const box = sandbox('million');
  const n = 1_000_000;
  const layer = path.join(box, 'layer.tar.gz');
  const fd = fs.openSync(layer, 'w');
  const batch = 10_000;
  for (let i = 0; i < n; i += batch) {
    const hs = [];
    for (let k = i; k < i + batch; k++) hs.push(header({ name: `d/f${k}` }));
    fs.writeSync(fd, zlib.gzipSync(Buffer.concat(hs), { level: 1 }));
  }
  fs.writeSync(fd, zlib.gzipSync(EOA));
  fs.closeSync(fd);
  ociImage(path.join(box, 'image'), [{ file: layer, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }]);
  build(t, box, { maxRssMiB: 1536, timeoutMs: 20 * 60_000 });
  const info = spawnSync(process.execPath, [CFS, 'info', path.join(box, 'out', 'img.ub')], { encoding: 'utf8' });
  t.regex(info.stdout, new RegExp(`inodes: +${n + 2} `));
  const ls = spawnSync(process.execPath, [CFS, 'ls', path.join(box, 'out', 'img.ub'), '/d'], { encoding: 'utf8', maxBuffer: 1 << 28 });
  t.is(ls.stdout.split('\n').filter(Boolean).length, n);
});

// ---- hostile blobs through extract ---------------------------------------------------------

test('extract: a failure leaves no half-written DEST', (t) => {
  const box = sandbox('extract-missing-object');
  ociImage(path.join(box, 'image'), [tar([dir('a'), file('a/small', 's\n'), file('a/big', 'b'.repeat(5000)), file('z', 'z'.repeat(5000))])]);
  build(t, box);
  const objects = listTree(path.join(box, 'out', 'store', 'objects')).filter((p) => p.includes('/'));
  fs.rmSync(path.join(box, 'out', 'store', 'objects', objects.at(-1)));
  const r = extract(t, box);
  t.not(r.status, 0);
  t.is(r.err.length, 1, r.err.join('\n'));
  t.regex(r.err[0], /not found in any store$/);
  t.false(fs.existsSync(path.join(box, 'dest')), 'DEST removed');
  // an empty DEST that existed stays, empty
  fs.mkdirSync(path.join(box, 'dest'));
  t.not(extract(t, box).status, 0);
  t.deepEqual(fs.readdirSync(path.join(box, 'dest')), []);
});

test('extract: a blob with a symlink and a directory of one name is refused, nothing outside DEST', (t) => {
  // The compiler cannot make this tree; forge it: encode "aa" (symlink out) and "ab" (a
  // directory holding the payload), then rename "ab" to "aa" in the directory data.
  const box = sandbox('extract-forged');
  const S_IFDIR = 0o040000;
  const S_IFLNK = 0o120000;
  const S_IFREG = 0o100000;
  const meta = { uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: new Map(), size: 0 };
  const outside = path.join(box, 'cwd');
  const tree = {
    ...meta, mode: S_IFDIR | 0o755, children: new Map([
      ['aa', { ...meta, mode: S_IFLNK | 0o777, target: outside, size: outside.length }],
      ['ab', { ...meta, mode: S_IFDIR | 0o755, children: new Map([[MARK, { ...meta, mode: S_IFREG | 0o644, size: 2, inline: Buffer.from('x\n') }]]) }],
    ]),
  };
  const blob = encodeBlob(tree, { inlineThreshold: 64 });
  const at = blob.indexOf('aaab', 0, 'latin1');
  t.true(at > 0, 'names stored back to back');
  blob[at + 3] = 'a'.charCodeAt(0);
  const forged = path.join(box, 'image', 'forged.ub');
  fs.writeFileSync(forged, blob);
  const r = extract(t, box, forged);
  t.not(r.status, 0, 'refused');
  t.is(r.err.length, 1, r.err.join('\n'));
  t.false(fs.existsSync(path.join(outside, MARK)));
});
