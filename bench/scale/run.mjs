// Scale series (issue #6): synthetic images of 10^4 .. 10^7 files and one image of > 2 TB of
// sparse objects, on the host through unionblob-fuse and in a qemu guest through unionblob.ko,
// each against the same tree unpacked on ext4 (the native limit) measured in the same run.
//
//   node bench/scale/run.mjs [--sizes 10000,100000] [--reps 3] [--lookups 5000]
//                            [--sparse-objects 20] [--sparse-gib 128] [--no-sparse]
//                            [--kernel-sizes N,...] [--no-kernel] [--json FILE]
//
// Per size N (images: bench/gen-synthetic.mjs N --lean: N files of 1-8 bytes in directories of
// 1,000, inlined in the blob; cached in $UB_CACHE/bench-scale/lean-N):
//   build    cfs build (wall, peak RSS from GNU time, blob bytes per inode) against the native
//            limit's counterpart: tar -x of the same layer onto a fresh ext4 (+ sync)
//   mount    unionblob-fuse BLOB DIR (returns once the mount exists) against mount(8) of the
//            ext4 loop device, both after drop_caches, --reps times; the server's RSS after it
//   lookup   fstatat() of --lookups random paths (lookup.c: per-call p50/p99), cold (after
//            drop_caches) then warm (the same paths again), --reps rounds of native then FUSE
// The native tree lives on its own ext4 loop image (inline_data, so 8-byte files need no data
// blocks, as they need none in the blob); blob and store sit on the host's ext4 root.
// Sparse image: --sparse-objects objects of --sparse-gib GiB each, made with truncate (a marker
// block at the start and at the end, the rest holes), named by their fs-verity digest computed
// run-length (bench/lib/verity-zero.mjs), and a blob written with format/encode that references
// them; mounted through FUSE: mount time, stat and reads at the end of every file, against the
// same files hardlinked into a plain directory.
// Kernel module (bench/scale/kernel.sh, guest: bench/scale/guest.sh): every size up to
// --kernel-sizes' largest (default: all) leaves two disk images behind, the native ext4 above
// (the tree) and a small ext4 holding the blob, the store and the path list; the sparse image
// leaves one ext4 holding blob, store, the hardlinked native side and the lists (mkfs.ext4 -d,
// holes kept). One Debian 6.12 guest (TCG) then gets them all as NVMe disks and measures, per
// size and round, mount(2) of the ext4 and of unionblob.ko after drop_caches, and the same
// random-path lookups cold and warm on both; for the sparse image, mount, stat + open + head +
// last block of every file cold (what the guest read is checked here) and warm stat latency.
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { sh, seconds, dropCaches, timed, argOf } from '../lib/proc.mjs';
import { summarize } from '../lib/stats.mjs';
import { sparseVerityDigest } from '../lib/verity-zero.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CFS = path.join(ROOT, 'bin', 'cfs');
const FUSE = path.join(ROOT, 'mounter', 'fuse', 'unionblob-fuse');
const CACHE = path.join(process.env.UB_CACHE || '/var/cache/unionblob-test', 'bench-scale');
const argv = process.argv.slice(2);
const opts = {
  sizes: argOf(argv, 'sizes', '10000,100000').split(',').map(Number),
  reps: Number(argOf(argv, 'reps', 3)),
  lookups: Number(argOf(argv, 'lookups', 5000)),
  sparseObjects: Number(argOf(argv, 'sparse-objects', 20)),
  sparseGiB: Number(argOf(argv, 'sparse-gib', 128)),
  sparse: !argv.includes('--no-sparse'),
  kernel: !argv.includes('--no-kernel'),
  kernelSizes: argOf(argv, 'kernel-sizes', undefined)?.split(',').map(Number),
  json: argOf(argv, 'json', undefined),
};
const log = (s) => process.stderr.write(`bench/scale: ${s}\n`);
const WORK = path.join(CACHE, 'run');
const LOOKUP = path.join(WORK, 'lookup');
const DISKS = path.join(WORK, 'disks');
/** The guest's disks so far: NVMe serial -> image file. */
const guestDisks = new Map();
const inGuest = (n) => opts.kernel && (!opts.kernelSizes || opts.kernelSizes.includes(n));

// ---- helpers -------------------------------------------------------------------------------

function freshDir(p) {
  sh('rm', ['-rf', '--', p]);
  fs.mkdirSync(p, { recursive: true });
  return p;
}

function leanImage(n) {
  const dir = path.join(CACHE, `lean-${n}`);
  if (!fs.existsSync(path.join(dir, 'index.json'))) {
    log(`generating ${n} lean files`);
    sh('rm', ['-rf', '--', dir]);
    sh(process.execPath, [path.join(ROOT, 'bench', 'gen-synthetic.mjs'), String(n), dir, '--lean']);
  }
  const idx = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
  const man = JSON.parse(fs.readFileSync(path.join(dir, 'blobs/sha256', idx.manifests[0].digest.slice(7)), 'utf8'));
  return { dir, layer: path.join(dir, 'blobs/sha256', man.layers[0].digest.slice(7)) };
}

/** A fresh ext4 on a loop device with room for n tiny files; returns the device. */
function makeExt4(img, n) {
  fs.rmSync(img, { force: true });
  const inodes = Math.ceil(n * 1.1) + 10000;
  // ext4 fits at most 32,768 inodes in a 128 MiB block group (one bitmap block): the file
  // system must have enough groups, whatever the data needs (the image file is sparse)
  const mib = Math.max(Math.ceil((inodes * 256 + (n / 1000) * 40960 + n * 64) / (1 << 20)), Math.ceil(inodes / 32768) * 128) + 256;
  sh('truncate', ['-s', `${mib}M`, img]);
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-I', '256', '-N', String(inodes), '-O', 'inline_data', '-E', 'lazy_itable_init=0,lazy_journal_init=0', img]);
  return sh('losetup', ['--find', '--show', img]).stdout.trim();
}

function fuseMount(blob, store, dir) {
  const pidfile = path.join(WORK, 'fuse.pid');
  fs.rmSync(pidfile, { force: true });
  const { s } = seconds(() => sh(FUSE, [blob, dir, '-o', `basedir=${store},pidfile=${pidfile}`]));
  const pid = fs.readFileSync(pidfile, 'utf8').trim();
  return { s, pid };
}

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function umount(dir) {
  sh('umount', [dir], { ok: () => true });
}

/** n random paths of the lean image (seeded: the same list for every config and run). */
function lookupPaths(n, count, file) {
  let seed = 0x2545f491;
  const rand = () => { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed / 2 ** 32; };
  const lines = [];
  for (let k = 0; k < count; k++) { const i = Math.floor(rand() * n); lines.push(`data/d${Math.floor(i / 1000)}/f${i}`); }
  fs.writeFileSync(file, lines.join('\n') + '\n');
}

function lookup(dir, paths, cold) {
  const out = sh(LOOKUP, [...(cold ? ['--cold'] : []), dir, paths]).stdout.trim();
  const r = Object.fromEntries(out.split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
  if (r.errors) throw new Error(`lookup in ${dir}: ${r.errors} errors`);
  return r;
}

const sumUp = (runs, key) => summarize(runs.map((r) => r[key]));

// ---- one size of the series ----------------------------------------------------------------

function scalePoint(n, heapMiB) {
  const img = leanImage(n);
  const dir = freshDir(path.join(WORK, `n${n}`));
  const nat = path.join(dir, 'native'), mnt = path.join(dir, 'fuse');
  fs.mkdirSync(nat); fs.mkdirSync(mnt);
  const dev = makeExt4(path.join(dir, 'native.img'), n);
  const res = { files: n };
  try {
    sh('mount', [dev, nat]);
    log(`${n}: tar -x onto ext4 (native)`);
    res.nativeBuild = timed('sh', ['-c', 'tar --numeric-owner -xpf "$1" -C "$2" && sync -f "$2"', 'sh', img.layer, nat]);
    umount(nat);
    log(`${n}: cfs build`);
    const blob = path.join(dir, 'image.ub'), store = path.join(dir, 'store');
    // node's default heap limit (about 4 GiB here) is below what 10^7 inodes take: raise it
    // to what the previous size says is needed, and say so in the figures
    res.heapMiB = heapMiB;
    res.build = timed(process.execPath, [...(heapMiB ? [`--max-old-space-size=${heapMiB}`] : []), CFS, 'build', `${img.dir}:latest`, '-o', blob, '--store', store, '--json']);
    res.summary = JSON.parse(res.build.stdout.trim().split('\n').pop());
    delete res.build.stdout; delete res.nativeBuild.stdout;
    res.blobBytes = fs.statSync(blob).size;
    res.bytesPerInode = res.blobBytes / res.summary.inodes;

    const paths = path.join(dir, 'paths');
    lookupPaths(n, opts.lookups, paths);
    res.mount = { ext4: [], fuse: [] };
    res.fuseRssKiB = [];
    res.lookup = { cold: { ext4: [], fuse: [] }, warm: { ext4: [], fuse: [] } };
    for (let rep = 0; rep < opts.reps; rep++) {
      log(`${n}: round ${rep + 1}/${opts.reps}`);
      dropCaches();
      res.mount.ext4.push(seconds(() => sh('mount', ['-o', 'ro', dev, nat])).s);
      dropCaches();
      const f = fuseMount(blob, store, mnt);
      res.mount.fuse.push(f.s);
      const rssMounted = rssKiB(f.pid);
      // cold then warm per config: the next config's drop_caches would make the warm one cold
      for (const [cfg, d] of [['ext4', nat], ['fuse', mnt]]) {
        res.lookup.cold[cfg].push(lookup(d, paths, true));
        res.lookup.warm[cfg].push(lookup(d, paths, false));
      }
      res.fuseRssKiB.push({ mounted: rssMounted, afterLookups: rssKiB(f.pid) });
      umount(mnt); umount(nat);
    }
    if (inGuest(n)) keepForGuest(n, path.join(dir, 'native.img'), [blob, store, paths]);
    res.stats = {
      mount: { ext4: summarize(res.mount.ext4), fuse: summarize(res.mount.fuse) },
      lookup: Object.fromEntries(['cold', 'warm'].map((w) => [w, Object.fromEntries(['ext4', 'fuse'].map((c) => [c, {
        p50: sumUp(res.lookup[w][c], 'p50_ns'), p99: sumUp(res.lookup[w][c], 'p99_ns'),
      }]))])),
    };
  } finally {
    umount(mnt); umount(nat);
    sh('losetup', ['-d', dev], { ok: () => true });
    sh('rm', ['-rf', '--', dir]);
  }
  return res;
}

/**
 * The guest's two disks of size n: the native ext4 (moved out of the way of the clean-up; its
 * loop device is detached before the guest boots) and an ext4 holding `files`.
 */
function keepForGuest(n, nativeImg, files) {
  fs.mkdirSync(DISKS, { recursive: true });
  const tree = path.join(DISKS, `ubt${n}.img`);
  fs.renameSync(nativeImg, tree);
  guestDisks.set(`ubt${n}`, tree);
  guestDisks.set(`ubb${n}`, ext4From(path.join(DISKS, `ubb${n}`), files));
}

/**
 * An ext4 image made with mkfs.ext4 -d from copies of `files` (under their own names, in its
 * root; one cp, so hardlinks between them stay hardlinks; holes stay holes).
 */
function ext4From(stem, files) {
  const stage = freshDir(`${stem}.d`);
  sh('cp', ['-a', '--sparse=always', ...files, stage]);
  const used = Number(sh('du', ['-sB1', stage]).stdout.split('\t')[0]);
  const img = `${stem}.img`;
  fs.rmSync(img, { force: true });
  sh('truncate', ['-s', `${Math.ceil((used * 1.3) / 2 ** 20) + 64}M`, img]);
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', stage, img]);
  sh('rm', ['-rf', '--', stage]);
  return img;
}

// ---- the > 2 TB image of sparse objects ----------------------------------------------------

/** The marker blocks of sparse object i: one at the start, one in the last block. */
function markers(i, size) {
  const head = Buffer.from(`unionblob sparse object ${i}: head\n`);
  const last = Math.floor((size - 1) / 4096) * 4096;
  const tail = Buffer.from(`unionblob sparse object ${i}: tail\n`).subarray(0, size - last);
  return [{ offset: 0, data: head }, { offset: last, data: tail }];
}

async function sparseImage() {
  const fmt = await import(path.join(ROOT, 'dist', 'format', 'index.js'));
  const dir = freshDir(path.join(WORK, 'sparse'));
  const store = path.join(dir, 'store'), nat = path.join(dir, 'native', 'big'), mnt = path.join(dir, 'fuse');
  fs.mkdirSync(nat, { recursive: true }); fs.mkdirSync(mnt);
  const size = opts.sparseGiB * 2 ** 30;
  const node = (mode, extra) => ({ mode, uid: 0, gid: 0, mtimeSec: 1704067200, mtimeNsec: 0, xattrs: new Map(), size: 0, ...extra });
  const big = node(fmt.S_IFDIR | 0o755, { children: new Map() });
  const root = node(fmt.S_IFDIR | 0o755, { children: new Map([['big', big]]) });
  const res = { objects: opts.sparseObjects, objectBytes: size, apparentBytes: size * opts.sparseObjects };
  try {
    const { s: hashS } = seconds(() => {
      for (let i = 0; i < opts.sparseObjects; i++) {
        const chunks = markers(i, size);
        const digest = sparseVerityDigest(size, chunks);
        const obj = fmt.objectPath(store, digest);
        fs.mkdirSync(path.dirname(obj), { recursive: true });
        const fd = fs.openSync(obj, 'w');
        for (const c of chunks) fs.writeSync(fd, c.data, 0, c.data.length, c.offset);
        fs.ftruncateSync(fd, size);
        fs.closeSync(fd);
        fs.linkSync(obj, path.join(nat, `f${i}`));
        big.children.set(`f${i}`, node(fmt.S_IFREG | 0o644, { size, digest }));
      }
    });
    res.digestSeconds = hashS;
    const blob = path.join(dir, 'image.ub');
    fs.writeFileSync(blob, fmt.encodeBlob(root));
    res.blobBytes = fs.statSync(blob).size;
    res.storeDiskBytes = Number(sh('du', ['-sB1', store]).stdout.split('\t')[0]);
    res.mount = [];
    res.readTail = { ext4: [], fuse: [] };
    const paths = path.join(dir, 'paths');
    fs.writeFileSync(paths, Array.from({ length: 50 }, () => Array.from({ length: opts.sparseObjects }, (_, i) => `big/f${i}`)).flat().join('\n') + '\n');
    res.lookup = { ext4: [], fuse: [] };
    for (let rep = 0; rep < opts.reps; rep++) {
      dropCaches();
      res.mount.push(fuseMount(blob, store, mnt).s);
      let apparent = 0;
      for (const [cfg, d] of [['ext4', path.dirname(nat)], ['fuse', mnt]]) {
        dropCaches();
        const { s } = seconds(() => {
          for (let i = 0; i < opts.sparseObjects; i++) apparent += checkMarkers(path.join(d, 'big', `f${i}`), i, size);
        });
        res.readTail[cfg].push(s / opts.sparseObjects);
        res.lookup[cfg].push(lookup(d, paths, false));
      }
      res.apparentSeen = apparent / 2;
      umount(mnt);
    }
    if (opts.kernel) {
      fs.writeFileSync(path.join(dir, 'ends'), Array.from({ length: opts.sparseObjects }, (_, i) => `big/f${i}`).join('\n') + '\n');
      guestDisks.set('ubsparse', ext4From(path.join(DISKS, 'ubsparse'), [blob, store, path.dirname(nat), paths, path.join(dir, 'ends')]));
    }
    res.stats = {
      mount: summarize(res.mount),
      readTail: { ext4: summarize(res.readTail.ext4), fuse: summarize(res.readTail.fuse) },
      lookup: Object.fromEntries(['ext4', 'fuse'].map((c) => [c, { p50: sumUp(res.lookup[c], 'p50_ns'), p99: sumUp(res.lookup[c], 'p99_ns') }])),
    };
  } finally {
    umount(mnt);
    sh('rm', ['-rf', '--', dir]);
  }
  return res;
}

/** stat + open + pread of the head and the last block; throws unless both markers are there. */
function checkMarkers(file, i, size) {
  const st = fs.statSync(file);
  if (st.size !== size) throw new Error(`${file}: size ${st.size}, expected ${size}`);
  const fd = fs.openSync(file, 'r');
  try {
    for (const c of markers(i, size)) {
      const b = Buffer.alloc(c.data.length);
      fs.readSync(fd, b, 0, b.length, c.offset);
      if (!b.equals(c.data)) throw new Error(`${file}: wrong bytes at offset ${c.offset}`);
    }
  } finally {
    fs.closeSync(fd);
  }
  return st.size;
}

// ---- the kernel module in the guest ---------------------------------------------------------

const kv = (text) => Object.fromEntries(text.trim().split(/\s+/).map((x) => x.split('=')).map(([k, v]) => [k, v !== undefined && v !== '' && Number.isFinite(Number(v)) ? Number(v) : v]));

/**
 * The guest's lines as figures: per size {mount: {cfg: [s]}, lookup: {cold|warm: {cfg: [lookup
 * line]}}}, the sparse image's {mount, ends, lookup} and what it read back (UBE lines).
 */
export function parseGuest(text) {
  const g = { info: {}, slab: {}, sizes: {}, sparse: null, readBack: [], errors: [] };
  const at = (o, ...keys) => keys.reduce((x, k, i) => (x[k] ??= i === keys.length - 1 ? [] : {}), o);
  for (const line of text.split('\n')) {
    let m;
    if ((m = /^UBS info (.*)/.exec(line))) {
      const f = kv(m[1]);
      if (f.n) g.slab[f.n] = f; else Object.assign(g.info, f);
    } else if ((m = /^UBS (error|dmesg) (.*)/.exec(line))) g.errors.push(`${m[1]}: ${m[2]}`);
    else if ((m = /^UBE cfg=(\S+) rep=1 END (\S+) (\d+) (.*)\|(.*)$/.exec(line))) g.readBack.push({ cfg: m[1], path: m[2], size: Number(m[3]), head: m[4], tail: m[5] });
    else if ((m = /^UBS n=(\S+) cfg=(\S+) test=(\S+) rep=\d+ (.*)/.exec(line))) {
      const [, n, cfg, test, rest] = m;
      const f = kv(rest);
      const into = n === 'sparse' ? (g.sparse ??= {}) : (g.sizes[n] ??= {});
      if (test === 'mount') at(into, 'mount', cfg).push(f.us / 1e6);
      else if (test === 'ends-cold') at(into, 'ends', cfg).push(f);
      else at(into, 'lookup', test.replace('lookup-', ''), cfg).push(f);
    }
  }
  return g;
}

/** Whether every sparse file read back its size and both markers through both configs. */
export function readBackRight(rows, objects, size) {
  const bad = [];
  for (const cfg of ['ext4', 'unionblob']) {
    for (let i = 0; i < objects; i++) {
      const r = rows.find((x) => x.cfg === cfg && x.path === `big/f${i}`);
      const [head, tail] = markers(i, size).map((c) => c.data.toString().split('\n')[0]);
      if (!r || r.size !== size || r.head !== head || r.tail !== tail) bad.push(`${cfg} big/f${i}: ${r ? `size ${r.size}, head "${r.head}", tail "${r.tail}"` : 'not read'}`);
    }
  }
  return bad;
}

/** Boot the guest with every disk kept; its figures go into out.kernel and the points. */
function guestRun(out) {
  const sizes = out.points.map((p) => p.files).filter((n) => guestDisks.has(`ubt${n}`));
  const sparse = guestDisks.has('ubsparse');
  log(`kernel guest: sizes ${sizes.join(',') || 'none'}${sparse ? ' and the sparse image' : ''}`);
  const t0 = Date.now();
  const r = spawnSync('bash', [path.join(ROOT, 'bench', 'scale', 'kernel.sh'), String(opts.reps), sizes.join(','), sparse ? '1' : '0',
    ...[...guestDisks].map(([serial, img]) => `${serial}=${img}`)], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 1 << 26 });
  const g = parseGuest(r.stdout ?? '');
  const k = { info: g.info, slab: g.slab, errors: g.errors, seconds: (Date.now() - t0) / 1000 };
  if (r.status !== 0) k.error = `bench/scale/kernel.sh exit status ${r.status ?? r.signal}`;
  for (const p of out.points) {
    const s = g.sizes[p.files];
    if (!s) continue;
    const lookupErrors = Object.values(s.lookup ?? {}).flatMap((w) => Object.values(w)).flat().reduce((a, x) => a + (x.errors ?? 0), 0);
    p.kernel = { ...s, lookupErrors };
  }
  if (sparse && g.sparse && out.sparse) {
    const bad = readBackRight(g.readBack, out.sparse.objects, out.sparse.objectBytes);
    out.sparse.kernel = { ...g.sparse, readBackWrong: bad, apparentSeen: g.readBack.filter((x) => x.cfg === 'unionblob').reduce((a, x) => a + x.size, 0) };
    if (bad.length) k.errors.push(`sparse image read back wrong: ${bad.slice(0, 3).join('; ')}`);
  }
  return k;
}

/**
 * The machine is shared: refuse a size whose build would need more than 2/3 of what is
 * available (peak RSS per inode of the previous size, times n), rather than push others' work
 * into the OOM killer.
 */
function memoryShort(n, prev) {
  if (!prev) return null;
  const need = (prev.build.rssMiB * 2 ** 20 / prev.summary.inodes) * n * 1.1;
  const avail = Number(/MemAvailable:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1]) * 1024;
  return need > avail * 2 / 3 ? `${n} files skipped: cfs build would need about ${(need / 2 ** 30).toFixed(1)} GiB, ${(avail / 2 ** 30).toFixed(1)} GiB available on this shared machine` : null;
}

// ---- main ----------------------------------------------------------------------------------

async function main() {
  if (process.getuid() !== 0) throw new Error('run as root (mounts, loop devices, drop_caches)');
  for (const [f, what] of [[FUSE, 'make -C mounter/fuse'], [path.join(ROOT, 'dist', 'format', 'index.js'), 'npx tsc -p tsconfig.json']]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: ${what}`);
  }
  freshDir(WORK);
  sh('gcc', ['-O2', '-Wall', '-o', LOOKUP, path.join(ROOT, 'bench', 'scale', 'lookup.c')]);
  const out = { opts, lean: 'bench/gen-synthetic.mjs N --lean: files of 1-8 bytes (their index), 1,000 per directory', points: [] };
  for (const n of opts.sizes) {
    const prev = out.points[out.points.length - 1];
    const short = memoryShort(n, prev);
    if (short) { log(short); (out.skipped ??= []).push({ files: n, why: short }); continue; }
    // Heap for the build: from the last size's RSS per inode, or ~1 KiB per inode when this is
    // the first size (a 10^7 series alone would otherwise die at node's default heap limit).
    const need = Math.ceil((prev ? prev.build.rssMiB / prev.summary.inodes : 1 / 1024) * n * 1.3);
    const heapMiB = need > v8.getHeapStatistics().heap_size_limit / 2 ** 20 ? need : 0;
    try {
      out.points.push(scalePoint(n, heapMiB));
    } catch (e) {
      // one size failing (the compiler's limits are part of what this measures) ends the series
      log(`${n} files failed: ${e.message.slice(0, 300)}`);
      (out.skipped ??= []).push({ files: n, why: `${n} files failed: ${e.message.split('\n')[0].slice(0, 400)}` });
      break;
    }
    if (opts.json) fs.writeFileSync(opts.json, JSON.stringify(out, null, 1));
  }
  if (opts.sparse) {
    log(`sparse image: ${opts.sparseObjects} x ${opts.sparseGiB} GiB`);
    out.sparse = await sparseImage();
  }
  if (guestDisks.size) {
    out.kernel = guestRun(out);
    if (out.kernel.error) { log(`kernel guest failed: ${out.kernel.error}`); process.exitCode = 1; }
  }
  if (opts.json) fs.writeFileSync(opts.json, JSON.stringify(out, null, 1));
  else console.log(JSON.stringify(out, null, 1));
  sh('rm', ['-rf', '--', WORK]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main().catch((e) => { console.error(`bench/scale: ${e.message}`); process.exit(1); });
