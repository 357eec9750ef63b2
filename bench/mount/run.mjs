// Mount benchmark: the same tree served three ways, timed with plain tools so the filesystem
// dominates the cost:
//   native   the unpacked tree (cfs extract) on the local filesystem
//   fuse     the blob through unionblob-fuse (cfs mount --backend fuse): kernel passthrough for
//            the objects where the kernel offers it (Linux 6.9+)
//   fuse-nopt the same with -o passthrough=off: file data through the server (splice)
//   mergerfs mergerfs over the unpacked tree (a FUSE filesystem that passes everything through)
// and three workloads, warm (everything read once before timing, best of --reps):
//   walk     find -printf '%s'     readdir + lstat of every entry
//   readall  find -type f | cat    open + read + close of every small file
//   seq      dd bs=1M of one big file (--big MiB); with --cold also after dropping the caches
//
//   node bench/mount/run.mjs [--files N] [--big MIB] [--reps N] [--cold] [--keep] [--work DIR]
//
// Needs root, /dev/fuse, mergerfs (optional: skipped when absent) and a built tree (npm run
// build, make -C mounter/fuse). The image is bench/gen-synthetic.mjs's, so runs are comparable.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CFS = path.join(ROOT, 'bin', 'cfs');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const flag = (name) => process.argv.includes(`--${name}`);

const opts = {
  files: Number(arg('files', 20000)),
  bigMiB: Number(arg('big', 200)),
  reps: Number(arg('reps', 3)),
  cold: flag('cold'),
  keep: flag('keep'),
  work: arg('work', undefined),
};

function run(cmd, args, { quiet = false, shell = false } = {}) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', shell, maxBuffer: 1 << 26 });
  if (r.status !== 0 && !quiet) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.error}`);
  return r;
}

function seconds(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function dropCaches() {
  spawnSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

// ---- the workloads: plain tools, output discarded ---------------------------------------

const WORKLOADS = {
  walk: (dir) => run('sh', ['-c', 'find "$1" -printf "%s\\n" > /dev/null', 'sh', dir]),
  readall: (dir, big) => run('sh', ['-c', 'find "$1" -type f ! -path "$1/$2" -exec cat {} + > /dev/null', 'sh', dir, big]),
  seq: (dir, big) => run('dd', [`if=${path.join(dir, big)}`, 'of=/dev/null', 'bs=1M']),
};

/** Best of `reps` warm runs (one untimed run first fills the caches). */
function warm(workload, dir, big) {
  workload(dir, big);
  let best = Infinity;
  for (let i = 0; i < opts.reps; i++) best = Math.min(best, seconds(() => workload(dir, big)));
  return best;
}

function cold(workload, dir, big) {
  dropCaches();
  return seconds(() => workload(dir, big));
}

// ---- setup -----------------------------------------------------------------------------

function prepare(work) {
  const image = path.join(work, 'image');
  const store = path.join(work, 'store');
  const blob = path.join(work, 'image.ub');
  const native = path.join(work, 'native');
  console.error(`bench: generating ${opts.files} files + ${opts.bigMiB} MiB in ${work}`);
  run(process.execPath, [path.join(ROOT, 'bench', 'gen-synthetic.mjs'), String(opts.files), image, '--big', String(opts.bigMiB << 20)]);
  run(process.execPath, [CFS, 'build', `${image}:latest`, '-o', blob, '--store', store]);
  run(process.execPath, [CFS, 'extract', blob, '--store', store, native]);
  return { store, blob, native, big: findBig(native) };
}

/** The generator writes its big file as data/big. */
function findBig(dir) {
  const rel = path.join('data', 'big');
  if (!fs.statSync(path.join(dir, rel)).isFile()) throw new Error(`${rel} missing in ${dir}`);
  return rel;
}

function mountAll(work, s) {
  const mounts = { native: s.native };
  const fuse = path.join(work, 'mnt-fuse');
  fs.mkdirSync(fuse, { recursive: true });
  run(process.execPath, [CFS, 'mount', s.blob, fuse, '--store', s.store, '--backend', 'fuse']);
  mounts.fuse = fuse;
  const nopt = path.join(work, 'mnt-fuse-nopt');
  fs.mkdirSync(nopt, { recursive: true });
  run(path.join(ROOT, 'mounter', 'fuse', 'unionblob-fuse'), [s.blob, nopt, '-o', `basedir=${s.store},passthrough=off,allow_other`]);
  mounts['fuse-nopt'] = nopt;
  if (run('sh', ['-c', 'command -v mergerfs'], { quiet: true }).status === 0) {
    const merger = path.join(work, 'mnt-mergerfs');
    fs.mkdirSync(merger, { recursive: true });
    // Its caching options at their most generous, so the comparison is with mergerfs at its best.
    const mo = 'ro,allow_other,use_ino,cache.files=auto-full,cache.entry=3600,cache.attr=3600,cache.negative_entry=3600,category.search=ff';
    if (run('mergerfs', ['-o', mo, s.native, merger], { quiet: true }).status !== 0) {
      run('mergerfs', ['-o', 'ro,allow_other,use_ino,cache.files=partial', s.native, merger]);
    }
    mounts.mergerfs = merger;
  } else {
    console.error('bench: mergerfs not installed: skipped');
  }
  return mounts;
}

function unmountAll(mounts) {
  if (mounts.fuse) run(process.execPath, [CFS, 'umount', mounts.fuse], { quiet: true });
  if (mounts['fuse-nopt']) run('umount', [mounts['fuse-nopt']], { quiet: true });
  if (mounts.mergerfs) run('umount', [mounts.mergerfs], { quiet: true });
}

// ---- main ------------------------------------------------------------------------------

function table(results, names) {
  const rows = [['workload', ...names.map((n) => `${n} (s)`), ...names.filter((n) => n !== 'native').map((n) => `${n}/native`)]];
  for (const [w, byName] of Object.entries(results)) {
    const base = byName.native;
    rows.push([w, ...names.map((n) => byName[n].toFixed(3)), ...names.filter((n) => n !== 'native').map((n) => (byName[n] / base).toFixed(2))]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padStart(widths[i])).join('  ')).join('\n');
}

function main() {
  if (process.getuid() !== 0) throw new Error('run as root (mounts)');
  const work = opts.work ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ub-bench-mount-'));
  const s = prepare(work);
  const mounts = mountAll(work, s);
  const names = Object.keys(mounts);
  const results = {};
  try {
    for (const [w, fn] of Object.entries(WORKLOADS)) {
      results[w] = {};
      for (const n of names) results[w][n] = warm(fn, mounts[n], s.big);
      if (opts.cold && w !== 'walk') {
        results[`${w}-cold`] = {};
        for (const n of names) results[`${w}-cold`][n] = cold(fn, mounts[n], s.big);
      }
    }
  } finally {
    unmountAll(mounts);
    if (!opts.keep && !opts.work) fs.rmSync(work, { recursive: true, force: true });
  }
  console.log(`# ${opts.files} files, ${opts.bigMiB} MiB sequential, best of ${opts.reps} warm runs${opts.cold ? ' (+ cold)' : ''}`);
  console.log(table(results, names));
}

main();
