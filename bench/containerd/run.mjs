// Benchmark: containerd's overlayfs snapshotter vs unionblob, in the same containerd run, with
// the SAME ctr command for both.
//   node bench/containerd/run.mjs [--containerd 1.6|1.7] [--runs N] [--rounds N] [--no-containerd-root]
//                                 [--mode local|transfer|both] [--speculate] [--archive docker|oci-gzip]
//                                 [--json FILE]
// Per snapshotter and import command: import time of images b then a (docker-archive, real
// Debian images from test/fixtures/make-images.sh), disk used by the snapshotter afterwards
// (du: overlayfs's snapshot dirs; unionblob's blobs + object store), and `ctr run --rm IMAGE
// true` start time. Import commands: "local" is `ctr images import` (1.6, and 1.7's default:
// ctr unpacks through containerd's diff service, unionblob's slow path); "transfer" is 1.7's
// `ctr images import --local=false` (containerd's transfer service unpacks; unionblob's fast path).
// --archive oci-gzip imports the same images as oci-archives with gzip layers (as a registry
// serves them) instead of docker-archives (uncompressed layers): both snapshotters then
// decompress, containerd in Go, unionblob's fast path in the addon (ISA-L).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { startEnv, fetchContainerd17, REPO } from '../../test/lib/containerd-env.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const version = opt('--containerd', '1.6');
const runs = Number(opt('--runs', 3));
const rounds = Number(opt('--rounds', 1));
const jsonFile = opt('--json', null);
const containerdRoot = !args.includes('--no-containerd-root');
// --speculate: unionblob's imports run with `cfs snapshotter --speculate-ingests` (it compiles
// base layers while containerd ingests them, for whichever snapshotter), overlayfs's with a
// snapshotter without it, so that it burns no CPU during overlayfs's imports.
const speculate = args.includes('--speculate');
if (speculate && !containerdRoot) throw new Error('--speculate needs the containerd root (drop --no-containerd-root)');
const modeArg = opt('--mode', version === '1.7' ? 'both' : 'local');
if (!['1.6', '1.7'].includes(version)) throw new Error(`--containerd: 1.6 or 1.7, not ${version}`);
if (!['local', 'transfer', 'both'].includes(modeArg)) throw new Error(`--mode: local, transfer or both, not ${modeArg}`);
if (version === '1.6' && modeArg !== 'local') throw new Error('containerd 1.6 has no transfer service: --mode local');
const modes = modeArg === 'both' ? ['transfer', 'local'] : [modeArg];
const images = JSON.parse(fs.readFileSync(execFileSync('bash', [path.join(REPO, 'test/fixtures/make-images.sh')], { encoding: 'utf8' }).trim(), 'utf8'));
const archive = opt('--archive', 'docker');
if (!['docker', 'oci-gzip'].includes(archive)) throw new Error(`--archive: docker or oci-gzip, not ${archive}`);
const variant = archive === 'docker' ? 'docker-archive' : 'oci-archive-gzip';
const A = images.images.a.variants[variant];
const B = images.images.b.variants[variant];
// A docker-archive names its image (RepoTags); an oci-archive only tags it ("b"), which ctr
// prefixes with --base-name.
const REF = archive === 'docker' ? { a: 'docker.io/unionblob/a:latest', b: 'docker.io/unionblob/b:latest' } : { a: 'docker.io/unionblob/a:a', b: 'docker.io/unionblob/b:b' };
const naming = (img) => (archive === 'docker' ? [] : ['--base-name', `docker.io/unionblob/${img}`]);

// containerd's gc may remove a snapshot directory while du walks the tree (du then exits 1)
const du = (p) => Number(spawnSync('du', ['-sb', '--', p], { encoding: 'utf8' }).stdout.split('\t')[0]);
const mib = (n) => (n / (1 << 20)).toFixed(1);
const secs = async (fn) => { const t = performance.now(); await fn(); return (performance.now() - t) / 1000; };
const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const TICK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
const PARTS = ['ctr', 'containerd', 'snapshotter', 'fuse', 'shim'];
/** Which part of the run a process is, from its command name. */
function part(comm) {
  if (comm === 'containerd') return 'containerd';
  if (comm.startsWith('containerd-shim')) return 'shim';
  if (comm.startsWith('unionblob-fuse')) return 'fuse';
  if (comm === 'node' || comm === 'MainThread' || comm.startsWith('cfs')) return 'snapshotter';
  return 'shim'; // runc and friends
}
/**
 * CPU seconds (user + system) used so far, per part: the processes of this run (containerd, the
 * snapshotter, FUSE servers, shims: their command lines name the run's directory) and our
 * children that have exited and been waited for (ctr). On a busy machine wall times mostly say
 * how many others wanted the two cores; CPU time is what an import costs.
 */
function cpuSeconds() {
  const out = Object.fromEntries(PARTS.map((p) => [p, 0]));
  for (const pid of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(e.dir)) continue;
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out[part(comm)] += (Number(f[11]) + Number(f[12])) / TICK; // utime, stime
    } catch { /* gone */ }
  }
  const own = fs.readFileSync(`/proc/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  out.ctr += (Number(own[13]) + Number(own[14])) / TICK; // cutime, cstime: waited-for children (ctr)
  return out;
}
const timed = async (fn) => {
  const c = cpuSeconds();
  const t = performance.now();
  await fn();
  const wall = (performance.now() - t) / 1000;
  const d = cpuSeconds();
  const parts = Object.fromEntries(PARTS.map((p) => [p, Number((d[p] - c[p]).toFixed(2))]));
  return { wall, cpu: PARTS.reduce((s, p) => s + d[p] - c[p], 0), parts };
};

const e = await startEnv({ ...(version === '1.7' ? { bin: path.join(fetchContainerd17(), 'usr', 'bin'), transfer: true } : {}), containerdRoot });
fs.chmodSync(e.dir, 0o755); // a user namespace's root must reach the containers' bundles
const results = [];
const loads = [load()];

/** Restart the snapshotter, with --speculate-ingests for unionblob's imports only. */
async function snapshotterFor(sn) {
  e.killSnapshotter('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  await e.startSnapshotter({ containerdRoot, args: sn === 'unionblob' ? ['--speculate-ingests'] : [] });
  // containerd reconnects to the proxy a moment after it is back
  for (let i = 0; ; i++) {
    if (i === 100) throw new Error('containerd does not reach the restarted snapshotter');
    try {
      await e.ctr(['snapshots', '--snapshotter', 'unionblob', 'ls']);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  // a new node process keeps compiling and loading for a while: wait until it idles, or that
  // CPU would count as the import's
  for (let i = 0, last = cpuSeconds().snapshotter; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 250));
    const now = cpuSeconds().snapshotter;
    if (now - last < 0.02) return;
    last = now;
  }
}

async function measure(sn, mode) {
  const cmd = mode === 'transfer' ? ['--local=false'] : [];
  if (speculate) await snapshotterFor(sn);
  const r = { snapshotter: sn, containerd: version, mode, speculate };
  const b = await timed(() => e.ctr(['images', 'import', ...cmd, ...naming('b'), '--snapshotter', sn, B]));
  r.importB = b.wall;
  r.cpuB = b.cpu;
  r.cpuPartsB = b.parts;
  // unionblob's Commit returns once the layer's objects and blob are on disk (syncfs);
  // overlayfs's unpack leaves its files in the page cache. The sync that makes the import
  // durable is timed apart, for both (not part of the import time): import + sync is the time
  // until a power cut can no longer lose the image.
  r.syncB = await secs(async () => { spawnSync('sync', ['-f', e.dir]); });
  r.diskB = sn === 'overlayfs' ? du(path.join(e.dir, 'root', 'io.containerd.snapshotter.v1.overlayfs')) : du(e.ubRoot);
  // image a has a hardlink to a file of a lower layer: containerd's overlayfs cannot unpack it
  r.importA = await secs(() => e.ctr(['images', 'import', ...cmd, ...naming('a'), '--snapshotter', sn, A])).catch(() => NaN);
  r.diskBytes = sn === 'overlayfs' ? du(path.join(e.dir, 'root', 'io.containerd.snapshotter.v1.overlayfs')) : du(e.ubRoot);
  const starts = [];
  for (let i = 0; i < runs; i++) {
    starts.push(await secs(() => e.ctr(['run', '--rm', '--fifo-dir', path.join(e.dir, 'fifo'), '--snapshotter', sn,
      REF.b, `bench-${sn}-${process.pid}-${i}`, 'true'])));
  }
  r.runTrue = starts.reduce((a, b) => a + b, 0) / starts.length;
  // The first start of a container in its own user namespace (ctr run --uidmap): containerd
  // chowns a copy of the image through the snapshotter (every file copied up, then committed);
  // with --remap-labels unionblob serves the image through the mapping instead. overlayfs in
  // containerd 1.6/1.7 has no such labels: its figure is the chown copy.
  const userns = (labels, i) => secs(() => e.ctr(['run', '--rm', '--fifo-dir', path.join(e.dir, 'fifo'), '--snapshotter', sn,
    ...(labels ? ['--remap-labels'] : []), '--uidmap', '0:100000:65536', '--gidmap', '0:100000:65536',
    REF.b, `bench-userns-${sn}-${process.pid}-${i}`, 'true'], { timeout: 600_000 }));
  r.usernsChown = await userns(false, 0);
  r.usernsLabels = sn === 'unionblob' ? await userns(true, 1) : null;
  await e.ctr(['images', 'rm', '--sync', REF.a, REF.b]).catch(() => {});
  // the content store keeps the layers otherwise: every round imports from scratch
  await e.ctr(['content', 'prune', 'references']).catch(() => {});
  return r;
}

try {
  // Rounds alternate which snapshotter goes first, so a change of load hits both alike.
  for (let round = 0; round < rounds; round++) {
    for (const mode of modes) {
      const order = round % 2 === 0 ? ['overlayfs', 'unionblob'] : ['unionblob', 'overlayfs'];
      for (const sn of order) results.push({ round, ...(await measure(sn, mode)) });
    }
    loads.push(load());
  }
} finally {
  await e.stop();
}
// Both snapshotters' roots are in the run's directory under $TMPDIR: name its filesystem, and how
// the snapshotter creates objects (O_TMPFILE + linkat through the Node addon when it is built).
const fsOfRun = execFileSync('df', ['--output=source,fstype', os.tmpdir()], { encoding: 'utf8' }).trim().split('\n').pop().trim().replace(/\s+/, ' ');
const objectFiles = fs.existsSync(path.join(REPO, 'mounter/addon/build/Release/unionblob.node')) ? 'O_TMPFILE + linkat (addon)' : 'temp name + rename (addon not built)';
const cmdName = (mode) => (mode === 'transfer' ? 'ctr images import --local=false' : 'ctr images import');
console.log(`containerd ${version}: import b, then a (${variant}; a shares b's base layer); ctr run --rm b true: mean of ${runs}; ` +
  `${rounds} round(s); unionblob ${containerdRoot ? 'with' : 'without'} --containerd-root${speculate ? ' and --speculate-ingests' : ''}; roots on ${fsOfRun} (${os.tmpdir()}); objects: ${objectFiles}; load average ${loads.join(' -> ')}`);
console.log(`| round | command | snapshotter | import b (s) | then sync -f (s) | CPU of import b (s): ${PARTS.join(' + ')} | disk after b (MiB) | import a (s) | disk after b+a (MiB) | ctr run true (s) |`);
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of results) {
  const a = Number.isNaN(r.importA) ? 'fails' : r.importA.toFixed(2);
  const parts = PARTS.map((p) => r.cpuPartsB[p].toFixed(2)).join(' + ');
  console.log(`| ${r.round} | ${cmdName(r.mode)} | ${r.snapshotter} | ${r.importB.toFixed(2)} | ${r.syncB.toFixed(2)} | ${r.cpuB.toFixed(2)} = ${parts} | ${mib(r.diskB)} | ${a} | ${mib(r.diskBytes)} | ${r.runTrue.toFixed(2)} |`);
}
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const summary = [];
for (const mode of modes) {
  const med = {};
  for (const sn of ['overlayfs', 'unionblob']) {
    const mine = results.filter((r) => r.snapshotter === sn && r.mode === mode);
    med[sn] = { wall: median(mine.map((r) => r.importB)), cpu: median(mine.map((r) => r.cpuB)), durable: median(mine.map((r) => r.importB + r.syncB)) };
    for (const p of PARTS) med[sn][p] = median(mine.map((r) => r.cpuPartsB[p]));
    console.log(`${cmdName(mode)}, ${sn}: import b median ${med[sn].wall.toFixed(2)} s (${mine.map((r) => r.importB.toFixed(2)).join(', ')}), ` +
      `CPU median ${med[sn].cpu.toFixed(2)} s (${mine.map((r) => r.cpuB.toFixed(2)).join(', ')}; per part: ${PARTS.map((p) => `${p} ${med[sn][p].toFixed(2)}`).join(', ')})`);
  }
  // Per round, unionblob over overlayfs: both ran back to back under about the same load.
  const ratios = [...new Set(results.map((r) => r.round))].map((round) => {
    const [o, u] = ['overlayfs', 'unionblob'].map((sn) => results.find((r) => r.round === round && r.mode === mode && r.snapshotter === sn));
    return { wall: u.importB / o.importB, cpu: u.cpuB / o.cpuB, durable: (u.importB + u.syncB) / (o.importB + o.syncB) };
  });
  const ratio = { wall: median(ratios.map((x) => x.wall)), cpu: median(ratios.map((x) => x.cpu)), durable: median(ratios.map((x) => x.durable)) };
  console.log(`${cmdName(mode)}: unionblob / overlayfs, import b, median of per-round ratios: wall x${ratio.wall.toFixed(2)} ` +
    `(${ratios.map((x) => x.wall.toFixed(2)).join(', ')}), CPU x${ratio.cpu.toFixed(2)} (${ratios.map((x) => x.cpu.toFixed(2)).join(', ')}) ` +
    `-> "import at least as fast as overlayfs": ${ratio.wall <= 1 ? 'PASS' : 'MISS'}`);
  console.log(`${cmdName(mode)}: import b + sync -f (until the image is on disk), overlayfs ${med.overlayfs.durable.toFixed(2)} s, unionblob ${med.unionblob.durable.toFixed(2)} s: ` +
    `x${ratio.durable.toFixed(2)} (${ratios.map((x) => x.durable.toFixed(2)).join(', ')}; info, not the issue's target)`);
  const firstUserns = (sn, key) => median(results.filter((r) => r.snapshotter === sn && r.mode === mode).map((r) => r[key]));
  const chownO = firstUserns('overlayfs', 'usernsChown');
  const chownU = firstUserns('unionblob', 'usernsChown');
  const labelsU = firstUserns('unionblob', 'usernsLabels');
  console.log(`${cmdName(mode)}: first start of a container in its own user namespace (ctr run --uidmap, b, true): overlayfs ` +
    `(containerd's chown copy) ${chownO.toFixed(2)} s, unionblob with --remap-labels ${labelsU.toFixed(2)} s: x${(labelsU / chownO).toFixed(3)}; ` +
    `unionblob through the chown copy ${chownU.toFixed(2)} s`);
  summary.push({ containerd: version, mode, command: cmdName(mode), medians: med, ratio, userns: { overlayfsChown: chownO, unionblobChown: chownU, unionblobLabels: labelsU } });
}
const out = { containerd: version, rounds, runs, containerdRoot, speculate, fs: fsOfRun, tmpdir: os.tmpdir(), objectFiles, loads, summary, results };
if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify(out, null, 1) + '\n');
console.log(JSON.stringify(out));
