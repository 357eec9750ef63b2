// Build benchmark (issue #2 §6): how fast `cfs build` compiles an image, against `umoci unpack`
// of the same image and against a lower bound measured in the same run. A benchmark, not a
// test: run it by hand, as root, on an otherwise idle machine if you can.
//
//   node bench/build/run.mjs [--files N] [--quick] [--reps N] [--cold] [--work DIR] [--keep]
//                            [--no-debian] [--no-synthetic] [--variant V] [--json FILE]
//                            [--store-fs root|ext4-journal|tmpfs|both|KIND,KIND...]
//
// Images: the real Debian image `a` of test/fixtures/make-images.sh (gzip OCI layout, 3 layers)
// and the synthetic image of bench/gen-synthetic.mjs with --files N small files (default
// 1,000,000; --quick: 100,000), generated once and cached in ${UB_CACHE}/bench-build/.
// Runs per image (each as a child process, wall time + peak RSS + CPU from /usr/bin/time):
//   build      cfs build into an empty store (fresh directory)
//   rebuild    cfs build again into the same store: every object present
//   umoci      umoci unpack into a fresh directory (then `sync -f` timed apart: cfs build ends
//              with a syncfs of the store, umoci does not sync)
//   lb         lower bound (lower-bound.mjs): decompress + tar-parse + fs-verity hash of every
//              file, hashed the way the compiler hashes (hashBuffer: one-shot SHA-256 per block)
//   lb-verity  the same with a format/verity.ts VerityHasher per file, as issue #2 words it
//   lb-objects the lower bound that also writes each distinct object file (temp name, write,
//              rename, then one `sync -f`) on its one thread: the unavoidable kernel work
// The Debian image is measured --reps times (default 3: medians, min..max), the synthetic
// image once. Page cache: warm by default (the image's layers are read once before the runs;
// each run starts after a `sync`); --cold drops the page cache before every run (as root;
// this slows down everything else on the machine). Other processes' CPU use during each run
// is measured from /proc/stat and printed ("others"), since it skews wall times.
// Everything is written under a new directory of --work (default: the system temp dir) and
// removed only at the end (--keep keeps it). --variant picks another export of image a from
// images.json (oci-zstd, oci-uncompressed, docker-archive, ...). --json FILE saves raw numbers.
// --store-fs picks the filesystem of the stores and of umoci's unpack destination: `root` (the
// work directory's, the default), `ext4-journal` (a fresh ext4 made by mkfs.ext4 with its
// default features, journal included, in a sparse file loop-mounted for each image and removed
// after it), or `both` (each image on root, then on ext4-journal). This VM's root ext4 has no
// journal, which makes ext4 scan recently freed inodes on every file creation (RESULTS.md);
// an ordinary host's ext4 has a journal. The image's layers stay where they are. A detached
// shell unmounts and deletes the loop filesystem if this process dies before it does.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { blobStats } from './blob-stats.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CFS = path.join(ROOT, 'bin', 'cfs');
const UB_CACHE = process.env.UB_CACHE || '/var/cache/unionblob-test';
const TIME = '/usr/bin/time';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const flag = (name) => process.argv.includes(`--${name}`);

const quick = flag('quick');
const opts = {
  files: Number(arg('files', quick ? 100_000 : 1_000_000)),
  reps: Number(arg('reps', 3)),
  cold: flag('cold'),
  work: arg('work', undefined),
  debian: !flag('no-debian'),
  synthetic: !flag('no-synthetic'),
  json: arg('json', undefined),
  keep: flag('keep'),
  variant: arg('variant', 'oci-gzip'),
  storeFs: arg('store-fs', 'root'),
};
const STORE_FS_KINDS = ['root', 'ext4-journal', 'tmpfs'];
const STORE_FS = opts.storeFs === 'both' ? ['root', 'ext4-journal'] : opts.storeFs.split(',');
if (STORE_FS.length === 0 || !STORE_FS.every((k) => STORE_FS_KINDS.includes(k))) {
  throw new Error(`--store-fs: root, ext4-journal, tmpfs, both, or a comma-separated list of the first three; not ${opts.storeFs}`);
}

const log = (s) => process.stderr.write(`bench/build: ${s}\n`);
/** The benchmark's own directory (set by main); /usr/bin/time writes its numbers there. */
let workDir = os.tmpdir();

// ---- measuring -----------------------------------------------------------------------------

/** Busy and total CPU seconds of the whole machine so far (/proc/stat, USER_HZ = 100). */
function cpuTimes() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  return { busy: (user + nice + system + irq + softirq + (steal || 0)) / 100, idle: (idle + iowait) / 100 };
}

function dropCaches() {
  spawnSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/**
 * Run a command under /usr/bin/time. Returns wall seconds (ours, around the child), peak RSS
 * (MiB, GNU time %M), CPU seconds of the child (user + sys, children included), other
 * processes' CPU use during the run in cores, and the child's stdout.
 */
function measure(cmd, args, { cwd } = {}) {
  spawnSync('sync');
  if (opts.cold) dropCaches();
  const tf = path.join(workDir, '.time');
  const c0 = cpuTimes();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(TIME, ['-f', '%e %M %U %S', '-o', tf, cmd, ...args], {
    cwd, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 28,
  });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c1 = cpuTimes();
  const lines = fs.readFileSync(tf, 'utf8').trim().split('\n');
  fs.rmSync(tf, { force: true });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.error || lines.join(' ')}`);
  const [, maxKiB, user, sys] = lines[lines.length - 1].split(' ').map(Number);
  const cpu = user + sys;
  const others = Math.max(0, (c1.busy - c0.busy - cpu) / wall);
  return { wall, rssMiB: maxKiB / 1024, cpu, others, load1: Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]), stdout: r.stdout };
}

function rmrf(p) {
  // rm(1) is faster than fs.rmSync on a million files, and the time is not measured anyway.
  spawnSync('rm', ['-rf', '--', p]);
}

// ---- the runs ------------------------------------------------------------------------------

function cfsBuild(image, work, store) {
  const out = path.join(work, 'image.ub');
  const m = measure(process.execPath, [CFS, 'build', image, '-o', out, '--store', store, '--json']);
  m.summary = JSON.parse(m.stdout.trim().split('\n').pop());
  m.blob = out;
  return m;
}

function umociUnpack(image, work) {
  const dest = path.join(work, 'umoci');
  const m = measure('umoci', ['unpack', '--image', image, dest]);
  // umoci leaves its writes in the page cache; cfs build ends with a syncfs. Time the sync apart.
  const t0 = process.hrtime.bigint();
  spawnSync('sync', ['-f', dest]);
  m.sync = Number(process.hrtime.bigint() - t0) / 1e9;
  return m;
}

function lowerBound(image, hasher, objects) {
  const extra = objects ? ['--objects', objects] : [];
  const m = measure(process.execPath, [path.join(ROOT, 'bench', 'build', 'lower-bound.mjs'), image, '--hasher', hasher, ...extra]);
  m.result = JSON.parse(m.stdout.trim().split('\n').pop());
  return m;
}

/** Read the image's files once so that warm runs start from the same state. */
function warmUp(dir) {
  spawnSync('sh', ['-c', 'find "$1" -type f -exec cat {} + > /dev/null', 'sh', dir]);
}

const haveUmoci = spawnSync('sh', ['-c', 'command -v umoci'], { stdio: 'ignore' }).status === 0;

function benchImage(name, layoutDir, tag, reps, work) {
  const image = `${layoutDir}:${tag}`;
  log(`${name}: ${image}, ${reps} run(s)${opts.cold ? ', cold cache' : ', warm cache'}`);
  if (!opts.cold) warmUp(layoutDir);
  const runs = [];
  let stats = null;
  for (let i = 0; i < reps; i++) {
    // Nothing is deleted before the end of the benchmark: on ext4 without a journal (like the
    // development VM's root), creating files shortly after deleting many is 2-3x slower in
    // the kernel (the inode allocator skips inodes freed in the last 60-300 s).
    const dir = path.join(work, `${name}-${i}`);
    fs.mkdirSync(dir);
    const store = path.join(dir, 'store');
    const r = {};
    log(`${name} #${i + 1}: lower bound`);
    r.lb = lowerBound(image, 'fast');
    r.lbVerity = lowerBound(image, 'verity');
    log(`${name} #${i + 1}: lower bound + object files`);
    r.lbObjects = lowerBound(image, 'fast', path.join(dir, 'lb-store'));
    log(`${name} #${i + 1}: cfs build (empty store)`);
    r.build = cfsBuild(image, dir, store);
    log(`${name} #${i + 1}: ${r.build.wall.toFixed(2)} s; cfs build (objects present)`);
    r.rebuild = cfsBuild(image, dir, store);
    if (r.rebuild.summary.objectsNew !== 0) throw new Error(`rebuild wrote ${r.rebuild.summary.objectsNew} new objects`);
    stats ??= blobStats(r.build.blob);
    log(`${name} #${i + 1}: ${r.rebuild.wall.toFixed(2)} s`);
    // umoci 0.4 (bookworm's) refuses zstd layers ("blob is not correct mediatype").
    if (haveUmoci && process.getuid() === 0 && !/zstd/.test(image)) {
      log(`${name} #${i + 1}: umoci unpack`);
      r.umoci = umociUnpack(image, dir);
      log(`${name} #${i + 1}: ${r.umoci.wall.toFixed(2)} s`);
    }
    for (const m of Object.values(r)) delete m.stdout;
    runs.push(r);
  }
  return { name, image, reps, summary: runs[0].build.summary, stats, runs };
}

// ---- reporting -----------------------------------------------------------------------------

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function agg(res, key, field) {
  const xs = res.runs.map((r) => r[key]?.[field]).filter((x) => x !== undefined);
  if (xs.length === 0) return null;
  return { med: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

function fmt(a, digits = 2) {
  if (!a) return 'n/a';
  const m = a.med.toFixed(digits);
  return a.n > 1 ? `${m} (${a.min.toFixed(digits)}..${a.max.toFixed(digits)})` : m;
}

const RUNS = [
  ['build', 'cfs build, empty store'],
  ['rebuild', 'cfs build, objects present'],
  ['umoci', 'umoci unpack'],
  ['lb', 'lower bound (decompress+hash)'],
  ['lbVerity', 'lower bound, VerityHasher'],
  ['lbObjects', 'lower bound + object files (one thread)'],
];

function markdownTable(rows) {
  const out = [`| ${rows[0].join(' | ')} |`, `|${rows[0].map(() => '---').join('|')}|`];
  for (const r of rows.slice(1)) out.push(`| ${r.join(' | ')} |`);
  return out.join('\n');
}

function report(results) {
  const lines = [];
  const targets = [];
  for (const res of results) {
    const s = res.summary;
    const st = res.stats;
    lines.push(`### ${res.name}, store on ${res.storeFs.label}: ${s.inodes.toLocaleString('en')} inodes, ${s.entries.toLocaleString('en')} tar entries, ${s.layers} layer(s), ${(s.bytes / 2 ** 20).toFixed(0)} MiB content, ${s.objectsNew.toLocaleString('en')} objects, ${s.inlineFiles.toLocaleString('en')} inline files`);
    lines.push('');
    lines.push(`${res.reps > 1 ? `median (min..max) of ${res.reps} runs` : 'one run'}, ${opts.cold ? 'page cache dropped before each run' : 'warm page cache'}; "others" = CPU cores used by other processes during the run`);
    lines.push('');
    const rows = [['run', 'wall s', 'peak RSS MiB', 'CPU s (user+sys)', 'others (cores)', 'wall / cfs build']];
    const b = agg(res, 'build', 'wall');
    for (const [key, label] of RUNS) {
      const w = agg(res, key, 'wall');
      if (!w) continue;
      rows.push([label, fmt(w), fmt(agg(res, key, 'rssMiB'), 0), fmt(agg(res, key, 'cpu')), fmt(agg(res, key, 'others'), 1), (w.med / b.med).toFixed(2)]);
    }
    lines.push(markdownTable(rows));
    const sync = agg(res, 'umoci', 'sync');
    if (sync) lines.push('', `umoci leaves its writes unsynced; a \`sync -f\` after it took ${fmt(sync)} s more (not included above).`);
    const sec = st.sections;
    const per = (n) => (n / st.inodes).toFixed(1);
    lines.push('');
    lines.push(`Blob: ${st.blobBytes.toLocaleString('en')} bytes = ${per(st.blobBytes)} B/inode; without the ${st.nameBytes.toLocaleString('en')} name bytes ${per(st.blobBytes - st.nameBytes)} B/inode. ` +
      `Per inode: INODES ${per(sec.INODES)}, DIRS ${per(sec.DIRS)} (dirents ${per(8 * st.dirents)}, names ${per(st.nameBytes)}, chunk padding ${per(sec.DIRS - 8 * st.dirents - st.nameBytes)}), ` +
      `DATA (inline contents, symlink targets) ${per(sec.DATA)}, DIGESTS ${per(sec.DIGESTS)}, XATTR ${per(sec.XATTR_INDEX + sec.XATTR_DATA)}, header + 4 KiB rounding ${per(st.blobBytes - Object.values(sec).reduce((x, y) => x + y, 0))}.`);
    lines.push('');

    const u = agg(res, 'umoci', 'wall');
    const lb = agg(res, 'lb', 'wall');
    const rb = agg(res, 'rebuild', 'wall');
    const where = res.name;
    const t = (ok, what, detail) => targets.push(`${ok === null ? 'n/a ' : ok ? 'PASS' : 'MISS'}  ${where}: ${what} (${detail})`);
    t(u ? b.med < u.med : null, 'cfs build faster than umoci unpack', u ? `${b.med.toFixed(2)} s vs ${u.med.toFixed(2)} s, ratio ${(b.med / u.med).toFixed(2)}` : /zstd/.test(res.image) ? 'umoci not run: it cannot read zstd layers' : 'umoci not run');
    t(b.med <= 1.5 * lb.med, 'cfs build within 1.5x of the lower bound', `${b.med.toFixed(2)} s vs ${lb.med.toFixed(2)} s = ${(b.med / lb.med).toFixed(2)}x; objects present: ${(rb.med / lb.med).toFixed(2)}x`);
    const lbo = agg(res, 'lbObjects', 'wall');
    if (lbo) {
      // Not a target of the issue: how far the build is from doing only the unavoidable work.
      targets.push(`info  ${where}: lower bound + object files (one thread, syncfs) ${lbo.med.toFixed(2)} s = ${(lbo.med / lb.med).toFixed(2)}x the lower bound; cfs build = ${(b.med / lbo.med).toFixed(2)}x that`);
    }
    if (s.inodes >= 1_000_000) {
      const rss = agg(res, 'build', 'rssMiB');
      t(b.med < 60 && rss.med < 2048, `${s.inodes.toLocaleString('en')} inodes built in < 60 s and < 2 GiB peak RSS on ${os.availableParallelism()} cores`, `${b.med.toFixed(1)} s, ${rss.med.toFixed(0)} MiB`);
    }
    t(st.blobBytes - st.nameBytes < 100 * st.inodes, 'blob < 100 bytes per inode + names', `${per(st.blobBytes - st.nameBytes)} B/inode + names`);
  }
  lines.push('### Targets', '', '```', ...targets, '```');
  return lines.join('\n');
}

const sh = (c) => { try { return execFileSync('sh', ['-c', c], { encoding: 'utf8' }).trim(); } catch { return '?'; } };

/** "DEV FSTYPE SIZE" of the work directory's filesystem, plus whether an ext4 one has a journal. */
function diskInfo(sh) {
  const [dev, type, size] = sh(`df -h --output=source,fstype,size "${opts.work ?? os.tmpdir()}" | tail -1`).split(/\s+/);
  let info = `${dev} ${type} ${size}`;
  const task = sh(`cat /sys/fs/ext4/${path.basename(dev ?? '')}/journal_task 2>/dev/null`);
  if (type === 'ext4' && task !== '?') info += task === '<none>' ? ' (no journal)' : ' (journal)';
  const rot = sh(`cat /sys/block/${path.basename(dev ?? '').replace(/p?[0-9]+$/, '')}/queue/rotational 2>/dev/null`);
  if (rot === '0' || rot === '1') info += rot === '1' ? ', rotational' : ', non-rotational';
  return info;
}

function machine() {
  const mem = /MemTotal:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))[1];
  return {
    date: new Date().toISOString(),
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model,
    ramGiB: Number(mem) / 2 ** 20,
    kernel: os.release(),
    disk: diskInfo(sh),
    storeFs: rootFs(sh),
    node: process.version,
    zlib: process.versions.zlib,
    umoci: sh('umoci --version'),
    // cfs build creates objects with O_TMPFILE + linkat through the Node addon when it is built
    // (`npm run build`), else through a temp name + rename: name which one this run measured.
    objectFiles: fs.existsSync(path.join(ROOT, 'mounter/addon/build/Release/unionblob.node')) ? 'O_TMPFILE + linkat (addon)' : 'temp name + rename (addon not built)',
    // ...and hashes with the addon's fs-verity (node's OpenSSL) where it has one, for the lower bound too
    hasher: process.env.UNIONBLOB_HASHER === 'js' ? 'node:crypto (UNIONBLOB_HASHER=js)'
      : spawnSync(process.execPath, ['--input-type=module', '-e', `import { nativeVerityDigest } from ${JSON.stringify(path.join(ROOT, 'dist/mounter/addon.js'))}; process.exit(nativeVerityDigest() ? 0 : 1)`]).status === 0
        ? 'addon (OpenSSL)' : 'node:crypto (addon without it)',
    commit: sh(`git -C "${ROOT}" rev-parse --short HEAD`) + (sh(`git -C "${ROOT}" status --porcelain -- compiler format`) ? ' + uncommitted changes in compiler/ or format/' : ''),
    load1AtStart: Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]),
  };
}

// ---- the store's filesystem ----------------------------------------------------------------

/** The "Filesystem features" line of an ext4 superblock, or null where dumpe2fs cannot read it. */
function ext4Features(devOrFile) {
  const line = sh(`dumpe2fs -h "${devOrFile}" 2>/dev/null | grep '^Filesystem features:'`);
  return line && line !== '?' ? line.replace(/^Filesystem features:\s*/, '') : null;
}

/** What the root runs' stores are on: the work directory's filesystem, and its journal. */
function rootFs(shell) {
  const dev = shell(`df --output=source "${opts.work ?? os.tmpdir()}" | tail -1`);
  const type = shell(`df --output=fstype "${opts.work ?? os.tmpdir()}" | tail -1`);
  // dumpe2fs needs to open the device; on this VM even root may not (then /sys says it).
  const features = type === 'ext4' ? ext4Features(dev) : null;
  const task = shell(`cat /sys/fs/ext4/${path.basename(dev)}/journal_task 2>/dev/null`);
  const journal = features ? /\bhas_journal\b/.test(features) : type === 'ext4' && task !== '?' ? task !== '<none>' : null;
  const label = `${dev} ${type}${journal === null ? '' : journal ? ' (journal)' : ' (no journal)'}`;
  return { kind: 'root', label, dev, type, journal, features, journalTask: task };
}

/**
 * Bytes for an image's loop filesystem, sparse: each run writes a store, the "lower bound +
 * object files" store and umoci's tree, about the image's uncompressed size each (layers of
 * gzip ~2.5x their blobs), and creates up to ~2.5 inodes per file of the image; mkfs.ext4's
 * default is one inode per 16 KiB.
 */
function ext4Bytes(layout, files, reps) {
  const blobBytes = Number(sh(`du -sb "${layout}" | cut -f1`));
  const data = reps * 3 * 2.5 * blobBytes;
  const inodes = reps * 2.5 * Math.max(files, blobBytes / 4096);
  return Math.ceil(Math.max(2 ** 31, 1.3 * data, 1.3 * inodes * 16384) / 2 ** 20) * 2 ** 20;
}

/** A fresh ext4 with mkfs.ext4's default features (journal on), loop-mounted under work. */
function makeExt4(work, name, bytes) {
  const file = path.join(work, `${name}.ext4`);
  const dir = path.join(work, `${name}.mnt`);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  // Default features; only the zeroing of inode tables and journal is done now rather than by
  // the kernel's ext4lazyinit thread during the timed runs, as on a filesystem in use for a while.
  execFileSync('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', file], { stdio: 'ignore' });
  fs.mkdirSync(dir);
  // Direct I/O: the loop device writes to its file without a second page cache, as a disk's
  // DMA does; a buffered loop copies every written page again in a kernel worker (~0.5 s of CPU
  // per 200 MB on this 2-core VM, charged to whoever writes: the build, umoci, the bound's objects).
  const dev = execFileSync('losetup', ['--direct-io=on', '--show', '-f', file], { encoding: 'utf8' }).trim();
  try {
    execFileSync('mount', [dev, dir]);
  } finally {
    execFileSync('losetup', ['-d', dev]); // mounted: only marked to detach itself at the unmount
  }
  guard(dir, file);
  const features = ext4Features(dev);
  if (!features || !/\bhas_journal\b/.test(features)) throw new Error(`${dev}: no journal on the fresh ext4 (${features})`);
  const label = `direct-I/O loop ext4 (journal), ${(bytes / 2 ** 30).toFixed(0)} GiB sparse file on ${path.dirname(file)}`;
  return { kind: 'ext4-journal', label, dir, file, dev, journal: true, features, bytes };
}

/**
 * The trap of a loop filesystem: a detached shell that waits for this process to end, however
 * it ends (SIGKILL included), then unmounts it (lazily: an orphaned child may still be writing
 * there) and deletes its file. The loop device was marked
 * (losetup -d while mounted) to detach itself on that unmount. On the normal path removeFs() has done both
 * already and the guard finds nothing to do.
 */
function guard(dir, file) {
  const script = 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; umount -l "$2" 2>/dev/null; [ -z "$3" ] || rm -f "$3"';
  spawn('sh', ['-c', script, 'sh', String(process.pid), dir, file], { detached: true, stdio: 'ignore' }).unref();
}

function removeFs(f) {
  const r = spawnSync('umount', [f.dir], { encoding: 'utf8' });
  if (r.status !== 0) log(`umount ${f.dir} failed: ${r.stderr.trim()}`);
  if (f.file) fs.rmSync(f.file, { force: true });
}

/**
 * A fresh tmpfs of at most `bytes`, mounted under work: the store in memory, no device, no
 * journal, no writeback. Its runs say what cfs build costs in CPU and system calls, apart from
 * what this machine's disks cost (the 1.5x target's lower bound writes nothing).
 */
function makeTmpfs(work, name, bytes) {
  const dir = path.join(work, `${name}.mnt`);
  fs.mkdirSync(dir);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes},nr_inodes=0,mode=0755`, 'ub-bench', dir]);
  guard(dir, '');
  return { kind: 'tmpfs', label: `tmpfs (memory, no device), at most ${(bytes / 2 ** 30).toFixed(0)} GiB`, dir, file: null, dev: 'tmpfs', journal: null, features: null, bytes };
}

/**
 * A result's name says its filesystem ("debian-a (oci-gzip) [ext4-journal]"): with --store-fs
 * both, an image has two results, and readers of the JSON (bench/lib/report.mjs) key rows by name.
 */
function named(img, kind) {
  return { name: `${img.name} [${kind}]`, imageName: img.name };
}

/** benchImage with the stores and umoci's tree on the filesystem `kind`. */
function benchOnFs(kind, img, work, rootInfo) {
  if (kind === 'root') {
    const res = benchImage(img.name, img.layout, img.tag, img.reps, work);
    return { ...res, ...named(img, kind), storeFs: rootInfo };
  }
  const bytes = ext4Bytes(img.layout, img.files, img.reps);
  const f = kind === 'tmpfs' ? makeTmpfs(work, `tmpfs-${path.basename(img.layout)}`, bytes) : makeExt4(work, `ext4-${path.basename(img.layout)}`, bytes);
  log(`${img.name}: stores on ${f.label}`);
  try {
    const res = benchImage(img.name, img.layout, img.tag, img.reps, f.dir);
    const { dir, file, ...info } = f;
    return { ...res, ...named(img, kind), storeFs: info };
  } finally {
    removeFs(f);
  }
}

// ---- main ----------------------------------------------------------------------------------

function ensureSynthetic(n) {
  const dir = path.join(UB_CACHE, 'bench-build', `synthetic-${n}`);
  if (fs.existsSync(path.join(dir, 'index.json'))) return dir;
  log(`generating the synthetic image (${n} files) in ${dir}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  execFileSync(process.execPath, [path.join(ROOT, 'bench', 'gen-synthetic.mjs'), String(n), tmp], { stdio: ['ignore', 'ignore', 'inherit'] });
  fs.renameSync(tmp, dir);
  return dir;
}

function main() {
  if (!fs.existsSync(TIME)) throw new Error(`${TIME} is missing: apt-get install time (bash .ci/install-deps.sh)`);
  if (!fs.existsSync(path.join(ROOT, 'dist', 'compiler', 'cli.js'))) throw new Error('dist/ is missing: npx tsc -p tsconfig.json');
  if (process.getuid() !== 0) log('not root: umoci unpack is skipped (it needs root to unpack as the image says)');
  if (opts.cold && process.getuid() !== 0) throw new Error('--cold needs root (drop_caches)');
  if (STORE_FS.some((k) => k !== 'root') && process.getuid() !== 0) throw new Error(`--store-fs ${opts.storeFs} needs root (mount)`);
  if (opts.work) fs.mkdirSync(opts.work, { recursive: true }); // before machine(): df looks at it
  const m = machine();
  const work = fs.mkdtempSync(path.join(opts.work ?? os.tmpdir(), 'ub-bench-build-'));
  workDir = work;
  const results = [];
  const t0 = Date.now();
  try {
    const images = [];
    if (opts.debian) {
      const manifest = execFileSync('bash', [path.join(ROOT, 'test', 'fixtures', 'make-images.sh')], { encoding: 'utf8' }).trim().split('\n').pop();
      const fixtures = JSON.parse(fs.readFileSync(manifest, 'utf8'));
      const layout = fixtures.images.a.variants[opts.variant];
      if (!layout) throw new Error(`image a has no variant ${opts.variant}`);
      images.push({ name: `debian-a (${opts.variant})`, layout, tag: 'a', reps: opts.reps, files: 0 });
    }
    if (opts.synthetic) {
      images.push({ name: `synthetic-${opts.files}`, layout: ensureSynthetic(opts.files), tag: 'latest', reps: 1, files: opts.files });
    }
    for (const img of images) {
      for (const kind of STORE_FS) {
        results.push(benchOnFs(kind, img, work, m.storeFs));
        // Saved after each image: a long run that is stopped keeps what it measured.
        if (opts.json) fs.writeFileSync(opts.json, JSON.stringify({ machine: m, partial: true, results }, null, 2));
      }
    }
    // Reported before the clean-up: removing a million files can take many minutes.
    printReport(m, results, t0);
  } finally {
    if (opts.keep) log(`kept ${work}`);
    else {
      log(`removing ${work}`);
      rmrf(work);
    }
  }
}

const FS_LABEL = { 'ext4-journal': 'a fresh loop ext4 with a journal', tmpfs: 'a fresh tmpfs (no device)' };

function printReport(m, results, t0) {
  m.benchSeconds = Math.round((Date.now() - t0) / 1000);
  m.load1AtEnd = Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  const text = [
    `## cfs build benchmark, ${m.date}`,
    '',
    `${m.nproc} cores (${m.cpu}), ${m.ramGiB.toFixed(1)} GiB RAM, Linux ${m.kernel}, disk ${m.disk}; stores on ${STORE_FS.map((k) => FS_LABEL[k] ?? m.storeFs.label).join(', then ')}; node ${m.node} (zlib ${m.zlib}), ${m.umoci}; objects: ${m.objectFiles ?? '?'}; fs-verity hashing: ${m.hasher ?? '?'}; commit ${m.commit}; ` +
      `load average ${m.load1AtStart} at start, ${m.load1AtEnd} at end; ${m.benchSeconds} s in all`,
    '',
    report(results),
  ].join('\n');
  console.log(text);
  if (opts.json) fs.writeFileSync(opts.json, JSON.stringify({ machine: m, results }, null, 2));
}

main();
