// Differential tests on real images (issue #2, "Tests"): test/fixtures/make-images.sh builds a
// debootstrap'ed Debian image plus edge-case layers with umoci, exports it with skopeo in every
// format and compression, and unpacks the reference tree with umoci. Here:
//   - `cfs build` of every export variant gives byte-identical blobs;
//   - `cfs extract` of the blob equals umoci's tree: path, type, mode, uid, gid, size, content
//     sha256, symlink target, rdev, xattrs, hardlink groups, and mtime (to the nanosecond, see below);
//   - the blob's mtimes (`cfs dump`) equal umoci's to the nanosecond;
//   - `cfs fsck` passes;
//   - a rebuild into the same store adds 0 objects and touches no object file;
//   - the store holds one object per distinct content above the inline threshold, never two for
//     the same content, each named by its fs-verity digest (checked with `fsverity` when present);
//   - image b (same base layer, content shared with a) adds only the contents the store lacks;
//     `cfs gc` with both blobs then leaves exactly the contents of a and b.
//
// No normalization: `cfs extract` sets times to the nanosecond with utimensat through the Node
// addon, which the test run builds; were it missing, extract falls back to Node's lutimes
// (libuv keeps microseconds) and the comparison says so and goes to the microsecond. The blob
// keeps nanoseconds either way, checked at full precision through `cfs dump`.
//
// Why the store may hold more than the final tree: layers are streamed once, so the contents
// of files that a later layer deletes or replaces are stored as they pass (`cfs gc` removes
// them). The expected store is therefore: contents of base (umoci's tree of the base tag)
// plus contents of a; every other layer-only content of the fixture is inlined (small).
// Needs root (devices, owners, trusted.* xattrs) and the tools of .ci/install-deps.sh; the
// fixtures are cached in ${UB_CACHE:-/var/cache/unionblob-test} (first run: 1-3 minutes).
import test from 'ava';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { treeManifest, diffManifests, showPath } from './lib/treeman.mjs';
import { nativeSetTimes } from '../dist/mounter/addon.js';

const execFileP = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CFS = process.env.CFS_BIN ?? path.join(ROOT, 'bin', 'cfs');
const MAKE_IMAGES = path.join(ROOT, 'test', 'fixtures', 'make-images.sh');
const MAX_SHOWN = 60;
const MTIME_PRECISION = nativeSetTimes() ? 'ns' : 'us';

const isRoot = process.getuid?.() === 0;
const serial = isRoot ? test.serial : test.serial.skip;
if (!isRoot) test('differential tests need root', (t) => t.pass());

// ------------------------------------------------------------------------------------------
// helpers

async function cfs(args, { json = false } = {}) {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [CFS, ...args], { maxBuffer: 1 << 28 });
    return { stdout, stderr, json: json ? JSON.parse(stdout.trim().split('\n').pop()) : undefined };
  } catch (err) {
    throw new Error(`cfs ${args.join(' ')} failed (exit ${err.code}):\n${err.stderr || err.message}`);
  }
}

/** Every object file of a store: relative path -> {ino, mtimeNs, size}. */
async function listObjects(store) {
  const out = new Map();
  const objects = path.join(store, 'objects');
  if (!fs.existsSync(objects)) return out;
  for (const xx of (await fsp.readdir(objects)).sort()) {
    if (!/^[0-9a-f]{2}$/.test(xx)) continue;
    for (const rest of (await fsp.readdir(path.join(objects, xx))).sort()) {
      if (!/^[0-9a-f]{62}$/.test(rest)) continue; // temp files are not objects
      const st = await fsp.lstat(path.join(objects, xx, rest), { bigint: true });
      out.set(`${xx}/${rest}`, { ino: st.ino, mtimeNs: st.mtimeNs, size: st.size, isFile: st.isFile() });
    }
  }
  return out;
}

async function sha256File(file) {
  const h = crypto.createHash('sha256');
  for await (const c of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(c);
  return h.digest('hex');
}

/** sha256 of every object: {bySha: Map<sha, objectName[]>}. */
async function objectContents(store, objects) {
  const bySha = new Map();
  for (const name of objects.keys()) {
    const sha = await sha256File(path.join(store, 'objects', name));
    if (!bySha.has(sha)) bySha.set(sha, []);
    bySha.get(sha).push(name);
  }
  return bySha;
}

/** Distinct contents (sha256) of the regular files of a manifest that belong in the store. */
function externalContents(manifest, inlineThreshold) {
  const s = new Set();
  for (const e of manifest.entries.values()) if (e.type === 'reg' && e.size > inlineThreshold) s.add(e.sha256);
  return s;
}

function inlineThresholdOf(blobFile) {
  const hdr = Buffer.alloc(40);
  const fd = fs.openSync(blobFile, 'r');
  try { fs.readSync(fd, hdr, 0, 40, 0); } finally { fs.closeSync(fd); }
  if (hdr.toString('latin1', 0, 8) !== 'UNIONBLB') throw new Error(`${blobFile}: not a unionblob blob`);
  return hdr.readUInt32LE(36);
}

/** Paths and mtimes of `cfs dump` (paths escaped as showPath does, root "."). */
async function dumpMtimes(blob) {
  const { stdout } = await cfs(['dump', blob]);
  const out = new Map();
  for (const line of stdout.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(' ');
    const p = f[0] === '/' ? '.' : f[0].slice(1);
    out.set(p, f[8]);
  }
  return out;
}

/** Digests (hex) of the objects a blob references, from `cfs dump`. */
async function dumpObjects(blob) {
  const { stdout } = await cfs(['dump', blob]);
  return new Set([...stdout.matchAll(/ obj:([0-9a-f]{64}) /g)].map((m) => m[1]));
}

function showDiffs(diffs) {
  const shown = diffs.slice(0, MAX_SHOWN).join('\n');
  return diffs.length > MAX_SHOWN ? `${shown}\n… and ${diffs.length - MAX_SHOWN} more` : shown;
}

// ------------------------------------------------------------------------------------------
// fixtures and shared state (the tests below run in order, each one on what the previous left)

const S = {
  images: null,   // images.json
  work: null,     // temp dir
  store: null,    // store shared by every build
  blobA: null,    // blob of image a (the canonical variant)
  blobB: null,
  refBase: null,  // manifests of umoci's trees
  refA: null,
  refB: null,
  threshold: null,
};

test.before(async () => {
  if (!isRoot) return;
  if (!fs.existsSync(path.join(ROOT, 'dist', 'compiler', 'cli.js'))) {
    throw new Error('dist/ is missing: run `npx tsc -p tsconfig.json` (npm test does) first');
  }
  const r = spawnSync('bash', [MAKE_IMAGES], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20 * 60 * 1000 });
  if (r.status !== 0) throw new Error(`make-images.sh failed (${r.status ?? r.signal}):\n${r.stderr}`);
  S.images = JSON.parse(fs.readFileSync(r.stdout.trim().split('\n').pop(), 'utf8'));
  S.work = await fsp.mkdtemp(path.join(process.env.UB_TEST_TMP ?? os.tmpdir(), 'ub-differential-'));
  S.store = path.join(S.work, 'store');
  await fsp.mkdir(S.store);
  S.refBase = await treeManifest(S.images.images.base.reference);
  S.refA = await treeManifest(S.images.images.a.reference);
  S.refB = await treeManifest(S.images.images.b.reference);
});

function needBlob(t) {
  if (S.blobA) return true;
  t.fail('no blob of image a: the first build test failed');
  return false;
}

test.after.always(async () => {
  if (S.work && !process.env.UB_KEEP) await fsp.rm(S.work, { recursive: true, force: true });
});

serial('treeman: a faithful copy has no difference, and every kind of change is reported', async (t) => {
  const base = await fsp.mkdtemp(path.join(S.work, 'treeman-'));
  const a = path.join(base, 'a');
  const b = path.join(base, 'b');
  const sh = (script) => {
    const r = spawnSync('bash', ['-euc', script], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${script}: ${r.stderr}`);
  };
  sh(`mkdir -p ${a}/d && cd ${a} && echo one > f && setfattr -n user.x -v 1 f && ln f d/f2 && ln -s f l &&
      mkfifo p && mknod c c 1 3 && echo two > g && touch -d '1969-07-20 20:17:40.123456789' g &&
      printf x > $'caf\\xe9' && setfattr -n trusted.y -v 0x00ff $'caf\\xe9' && touch -d '1969-07-20 20:17:40.123456789' $'caf\\xe9' && echo z > gone && echo h > h1 && ln h1 h2 &&
      cp -a ${a} ${b}`);
  const ma = await treeManifest(a);
  t.deepEqual(diffManifests(ma, await treeManifest(b)), []);
  t.is(ma.entries.get('g').mtime, '-14182940.123456789');
  t.is(ma.entries.get('c').rdev, '1:3');
  t.deepEqual(ma.entries.get('caf\xe9').xattrs, { 'trusted.y': '00ff' });
  t.deepEqual(ma.hardlinkGroups, [['d/f2', 'f'], ['h1', 'h2']]);
  sh(`cd ${b} && chmod 600 f && setfattr -n user.x -v 2 f && echo TWO > g && rm l && ln -s g l &&
      rm c && mknod c c 1 5 && rm gone && echo new > new && rm h2 && cp h1 h2 && touch -d '1969-07-20 20:17:40.123456788' $'caf\\xe9' &&
      setfattr -x trusted.y $'caf\\xe9'`);
  const mb = await treeManifest(b);
  const got = diffManifests(ma, mb, { labels: ['A', 'B'] });
  const expect = [
    /^c: rdev: A=1:3 B=1:5$/, /^f: mode: A=0644 B=0600$/, /^f: xattrs: A=user.x=31 B=user.x=32$/, /^d\/f2: xattrs: A=user.x=31 B=user.x=32$/,
    /^g: size: A=4 B=4$|^g: sha256: /, /^l: target: A=f B=g$/, /^gone: only in A \(reg\)$/, /^new: only in B \(reg\)$/,
    /^h1: hardlinks: A=h1 h2 B=\(none\)$/, /^caf\\xe9: xattrs: A=trusted.y=00ff B=\(none\)$/, /^caf\\xe9: mtime: /,
  ];
  for (const re of expect) t.true(got.some((l) => re.test(l)), `no line like ${re} in:\n${got.join('\n')}`);
  t.false(diffManifests(ma, mb, { mtimePrecision: 'us' }).some((l) => l.startsWith('caf\\xe9: mtime')), 'a 1 ns change is below microseconds');
  await fsp.rm(base, { recursive: true, force: true });
});

// The canonical variant first: its build fills the store; every other variant must then give the
// same blob and add nothing.
const CANONICAL = 'oci-layout-multitag';

serial('build: every export variant of image a gives the same blob', async (t) => {
  const variants = S.images.images.a.variants;
  const order = [CANONICAL, ...Object.keys(variants).filter((v) => v !== CANONICAL)];
  const blobs = new Map();
  for (const v of order) {
    const out = path.join(S.work, `a-${v}.ub`);
    const { json } = await cfs(['build', variants[v], '-o', out, '--store', S.store, '--json'], { json: true });
    t.log(`${v}: ${json.inodes} inodes, ${json.objectsNew} new / ${json.objectsPresent} present objects, ${json.seconds}s`);
    if (v !== CANONICAL) t.is(json.objectsNew, 0, `${v}: objects added after the ${CANONICAL} build`);
    else { S.blobA = out; S.threshold = inlineThresholdOf(out); }
    blobs.set(v, fs.readFileSync(out));
  }
  const ref = blobs.get(CANONICAL);
  const hash = (b) => crypto.createHash('sha256').update(b).digest('hex').slice(0, 16);
  for (const [v, b] of blobs) {
    t.true(b.equals(ref), `${v}: blob ${hash(b)} (${b.length} bytes) differs from ${CANONICAL}'s ${hash(ref)} (${ref.length} bytes)`);
  }
});

serial('build: uncompressed layers labelled tar+gzip (skopeo docker-archive -> oci) give the same blob', async (t) => {
  const img = S.images.images.a.extraVariants['oci-uncompressed-labelled-gzip'];
  const out = path.join(S.work, 'a-mislabelled.ub');
  await cfs(['build', img, '-o', out, '--store', S.store]);
  t.true(fs.readFileSync(out).equals(fs.readFileSync(S.blobA)));
});

// mkcomposefs's way in: a directory tree. umoci's unpack of each image (a root filesystem made
// by another tool) compiles to the blob the image itself compiles to, byte for byte: the same
// modes, owners, times, xattrs, devices and hardlinks, nothing added or lost; its contents are
// all in the store already.
serial('build --rootfs: umoci\'s unpack of images a and b gives the blob of the image itself', async (t) => {
  if (!needBlob(t)) return;
  for (const name of ['a', 'b']) {
    const img = S.images.images[name];
    // Image b goes into a store of its own: the tests below count what image a's builds left in S.store.
    const store = name === 'a' ? S.store : path.join(S.work, 'store-b');
    const fromImage = name === 'a' ? S.blobA : path.join(S.work, 'b-for-rootfs.ub');
    if (name === 'b') await cfs(['build', img.variants[CANONICAL], '-o', fromImage, '--store', store]);
    const out = path.join(S.work, `${name}-rootfs.ub`);
    const { json } = await cfs(['build', '--rootfs', img.reference, '-o', out, '--store', store, '--json'], { json: true });
    t.is(json.layers, 0);
    t.is(json.objectsNew, 0, `${name}: the tree has contents the image has not`);
    t.true(fs.readFileSync(out).equals(fs.readFileSync(fromImage)), `${name}: the blob from umoci's tree differs from the image's`);
  }
});

serial('extract: image a equals the umoci reference tree', async (t) => {
  if (!needBlob(t)) return;
  const dest = path.join(S.work, 'extract-a');
  await cfs(['extract', S.blobA, '--store', S.store, dest]);
  const ours = await treeManifest(dest);
  t.true(S.refA.entries.size > 5000, 'the reference tree looks too small');
  const diffs = diffManifests(S.refA, ours, { labels: ['umoci', 'cfs'], mtimePrecision: MTIME_PRECISION });
  t.deepEqual(diffs, [], `${diffs.length} difference(s) between umoci's tree and cfs extract:\n${showDiffs(diffs)}`);
});

serial('blob: every path of the reference, with its mtime to the nanosecond (cfs dump)', async (t) => {
  if (!needBlob(t)) return;
  const dumped = await dumpMtimes(S.blobA);
  const diffs = [];
  for (const [p, e] of S.refA.entries) {
    const d = dumped.get(showPath(p));
    if (d === undefined) diffs.push(`${showPath(p)}: not in cfs dump`);
    else if (d !== e.mtime) diffs.push(`${showPath(p)}: mtime: umoci=${e.mtime} blob=${d}`);
  }
  t.is(dumped.size, S.refA.entries.size, 'paths in cfs dump vs the reference');
  t.deepEqual(diffs, [], showDiffs(diffs));
});

serial('fsck: the blob and the store pass', async (t) => {
  if (!needBlob(t)) return;
  const { stdout, stderr } = await cfs(['fsck', S.blobA, '--store', S.store]);
  t.log((stdout + stderr).trim().split('\n').slice(-3).join('\n'));
  t.pass();
});

serial('rebuild into the same store: 0 new objects, no object file touched, same blob', async (t) => {
  if (!needBlob(t)) return;
  const before = await listObjects(S.store);
  const out = path.join(S.work, 'a-again.ub');
  const { json } = await cfs(['build', S.images.images.a.variants[CANONICAL], '-o', out, '--store', S.store, '--json'], { json: true });
  t.is(json.objectsNew, 0);
  t.is(json.objectsPresent, before.size, 'objectsPresent should count every object of the image');
  t.deepEqual(await listObjects(S.store), before);
  t.true(fs.readFileSync(out).equals(fs.readFileSync(S.blobA)));
});

serial('store: one object per distinct content above the inline threshold, none twice, verity names', async (t) => {
  if (!needBlob(t)) return;
  const objects = await listObjects(S.store);
  for (const [name, o] of objects) t.true(o.isFile, `${name} is not a plain file`);
  const bySha = await objectContents(S.store, objects);
  const twice = [...bySha].filter(([, names]) => names.length > 1);
  t.deepEqual(twice, [], 'the same content stored under several names');

  // What the blob references is exactly the external contents of the final tree.
  const contentsA = externalContents(S.refA, S.threshold);
  const shaOf = new Map([...bySha].map(([sha, [name]]) => [name.replace('/', ''), sha]));
  const referenced = await dumpObjects(S.blobA);
  const unstored = [...referenced].filter((d) => !shaOf.has(d));
  t.deepEqual(unstored, [], 'digests the blob references that have no object');
  const refContents = new Set([...referenced].map((d) => shaOf.get(d)));
  t.is(referenced.size, contentsA.size, 'objects referenced by the blob');
  t.deepEqual([...contentsA].filter((s) => !refContents.has(s)), [], 'contents of the tree the blob references no object for');

  // The store holds what passed through the layers: base's contents and a's.
  const expected = new Set([...externalContents(S.refBase, S.threshold), ...contentsA]);
  t.deepEqual([...expected].filter((s) => !bySha.has(s)), [], 'contents of the layers with no object');
  t.deepEqual([...bySha.keys()].filter((s) => !expected.has(s)), [], 'objects that are no content of any layer');
  t.is(objects.size, expected.size);

  // Inlined contents must not be in the store: the edge sizes of the fixture.
  const sizes = [...S.refA.entries].filter(([p]) => p.startsWith('opt/ub/sizes/f'));
  t.true(sizes.length >= 10);
  for (const [p, e] of sizes) t.is(refContents.has(e.sha256), e.size > S.threshold, `${p} (${e.size} bytes, threshold ${S.threshold})`);

  // Object names are fs-verity digests (independent check with fsverity-utils).
  const fsverity = spawnSync('fsverity', ['--version'], { encoding: 'utf8' });
  if (fsverity.status !== 0) { t.log('fsverity not installed: object names not checked'); return; }
  const names = [...objects.keys()];
  const bad = [];
  for (let i = 0; i < names.length; i += 200) {
    const batch = names.slice(i, i + 200);
    const r = spawnSync('fsverity', ['digest', '--compact', ...batch.map((n) => path.join(S.store, 'objects', n))], { encoding: 'utf8', maxBuffer: 1 << 26 });
    t.is(r.status, 0, r.stderr);
    const digests = r.stdout.trim().split('\n');
    batch.forEach((n, k) => { if (digests[k] !== n.replace('/', '')) bad.push(`${n}: fsverity digest ${digests[k]}`); });
  }
  t.deepEqual(bad, [], 'objects whose name is not their fs-verity digest');
});

serial('image b into the same store: only what the store lacks is added, none twice; extract equals umoci', async (t) => {
  if (!needBlob(t)) return;
  const before = await listObjects(S.store);
  const beforeSha = new Set((await objectContents(S.store, before)).keys());
  S.blobB = path.join(S.work, 'b.ub');
  const { json } = await cfs(['build', S.images.images.b.variants[CANONICAL], '-o', S.blobB, '--store', S.store, '--json'], { json: true });
  const contentsB = externalContents(S.refB, S.threshold);
  const layersB = new Set([...externalContents(S.refBase, S.threshold), ...contentsB]);
  const newB = [...contentsB].filter((s) => !beforeSha.has(s));
  t.true(newB.length > 0 && newB.length < contentsB.size / 10, 'fixture: b should share most contents with a');
  t.is(json.objectsNew, newB.length, 'new objects for b');
  t.is(json.objectsNew + json.objectsPresent, layersB.size, 'distinct contents of b\'s layers');
  const after = await listObjects(S.store);
  t.is(after.size, before.size + newB.length);
  for (const [name, o] of before) t.deepEqual(after.get(name), o, `object ${name} was rewritten`);
  const bySha = await objectContents(S.store, after);
  t.deepEqual([...bySha].filter(([, names]) => names.length > 1), [], 'the same content stored under several names');
  t.is(bySha.size, new Set([...beforeSha, ...contentsB]).size);

  const dest = path.join(S.work, 'extract-b');
  await cfs(['extract', S.blobB, '--store', S.store, dest]);
  const diffs = diffManifests(S.refB, await treeManifest(dest), { labels: ['umoci', 'cfs'], mtimePrecision: MTIME_PRECISION });
  t.deepEqual(diffs, [], `${diffs.length} difference(s) between umoci's tree of b and cfs extract:\n${showDiffs(diffs)}`);
  await cfs(['fsck', S.blobB, '--store', S.store]);
});

serial('gc with both blobs leaves exactly the contents of a and b', async (t) => {
  if (!needBlob(t) || !S.blobB) { t.fail('needs the blobs of a and b'); return; }
  await cfs(['gc', S.blobA, S.blobB, '--store', S.store]);
  const bySha = await objectContents(S.store, await listObjects(S.store));
  const expected = new Set([...externalContents(S.refA, S.threshold), ...externalContents(S.refB, S.threshold)]);
  t.deepEqual([...expected].filter((s) => !bySha.has(s)), [], 'contents gc removed although a blob references them');
  t.deepEqual([...bySha.keys()].filter((s) => !expected.has(s)), [], 'objects gc kept that no blob references');
  await cfs(['fsck', S.blobA, '--store', S.store]);
  await cfs(['fsck', S.blobB, '--store', S.store]);
  t.pass();
});
