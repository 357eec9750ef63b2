// Benchmark: containerd's overlayfs snapshotter vs unionblob, in the same containerd run.
//   node bench/containerd/run.mjs [--containerd 1.6|1.7] [--runs N] [--rounds N] [--no-containerd-root]
// Per snapshotter: import time of images b then a (docker-archive, real Debian images from
// test/fixtures/make-images.sh), disk used by the snapshotter afterwards (du: overlayfs's
// snapshot dirs; unionblob's blobs + object store), and `ctr run --rm IMAGE true` start time.
// On 1.7 the unionblob imports use the transfer service (--local=false: the fast path).
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { startEnv, fetchContainerd17, REPO } from '../../test/lib/containerd-env.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const version = opt('--containerd', '1.6');
const runs = Number(opt('--runs', 3));
const rounds = Number(opt('--rounds', 1));
const containerdRoot = !args.includes('--no-containerd-root');
const images = JSON.parse(fs.readFileSync(execFileSync('bash', [path.join(REPO, 'test/fixtures/make-images.sh')], { encoding: 'utf8' }).trim(), 'utf8'));
const A = images.images.a.variants['docker-archive'];
const B = images.images.b.variants['docker-archive'];

// containerd's gc may remove a snapshot directory while du walks the tree (du then exits 1)
const du = (p) => Number(spawnSync('du', ['-sb', '--', p], { encoding: 'utf8' }).stdout.split('\t')[0]);
const mib = (n) => (n / (1 << 20)).toFixed(1);
const secs = async (fn) => { const t = performance.now(); await fn(); return (performance.now() - t) / 1000; };
const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const TICK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
/**
 * CPU seconds (user + system) used so far by the processes of this run (containerd, the
 * snapshotter, FUSE servers, shims: their command lines name the run's directory) and by our
 * children that have exited and been waited for (ctr). On a busy machine wall times mostly say
 * how many others wanted the two cores; CPU time is what an import costs.
 */
function cpuSeconds() {
  let ticks = 0;
  for (const pid of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(e.dir)) continue;
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime
    } catch { /* gone */ }
  }
  const own = fs.readFileSync(`/proc/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  ticks += Number(own[13]) + Number(own[14]); // cutime, cstime: waited-for children (ctr)
  return ticks / TICK;
}
const timed = async (fn) => {
  const c = cpuSeconds();
  const t = performance.now();
  await fn();
  return { wall: (performance.now() - t) / 1000, cpu: cpuSeconds() - c };
};

const e = await startEnv({ ...(version === '1.7' ? { bin: path.join(fetchContainerd17(), 'usr', 'bin'), transfer: true } : {}), containerdRoot });
const results = [];
const loads = [load()];

async function measure(sn) {
  const local = version === '1.7' && sn === 'unionblob' ? ['--local=false'] : [];
  const r = { snapshotter: sn, containerd: version };
  const b = await timed(() => e.ctr(['images', 'import', ...local, '--snapshotter', sn, B]));
  r.importB = b.wall;
  r.cpuB = b.cpu;
  r.diskB = sn === 'overlayfs' ? du(path.join(e.dir, 'root', 'io.containerd.snapshotter.v1.overlayfs')) : du(e.ubRoot);
  // image a has a hardlink to a file of a lower layer: containerd's overlayfs cannot unpack it
  r.importA = await secs(() => e.ctr(['images', 'import', ...local, '--snapshotter', sn, A])).catch(() => NaN);
  r.diskBytes = sn === 'overlayfs' ? du(path.join(e.dir, 'root', 'io.containerd.snapshotter.v1.overlayfs')) : du(e.ubRoot);
  const starts = [];
  for (let i = 0; i < runs; i++) {
    starts.push(await secs(() => e.ctr(['run', '--rm', '--fifo-dir', path.join(e.dir, 'fifo'), '--snapshotter', sn,
      'docker.io/unionblob/b:latest', `bench-${sn}-${process.pid}-${i}`, 'true'])));
  }
  r.runTrue = starts.reduce((a, b) => a + b, 0) / starts.length;
  await e.ctr(['images', 'rm', '--sync', 'docker.io/unionblob/a:latest', 'docker.io/unionblob/b:latest']).catch(() => {});
  // the content store keeps the layers otherwise: every round imports from scratch
  await e.ctr(['content', 'prune', 'references']).catch(() => {});
  return r;
}

try {
  // Rounds alternate which snapshotter goes first, so a change of load hits both alike.
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? ['overlayfs', 'unionblob'] : ['unionblob', 'overlayfs'];
    for (const sn of order) results.push({ round, ...(await measure(sn)) });
    loads.push(load());
  }
} finally {
  await e.stop();
}
console.log(`containerd ${version}: import b, then a (docker-archive; a shares b's base layer); ctr run --rm b true: mean of ${runs}; ` +
  `${rounds} round(s); unionblob ${containerdRoot ? 'with' : 'without'} --containerd-root; load average ${loads.join(' -> ')}`);
console.log('| round | snapshotter | import b (s) | CPU of import b (s) | disk after b (MiB) | import a (s) | disk after b+a (MiB) | ctr run true (s) |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of results) {
  const a = Number.isNaN(r.importA) ? 'fails' : r.importA.toFixed(2);
  console.log(`| ${r.round} | ${r.snapshotter} | ${r.importB.toFixed(2)} | ${r.cpuB.toFixed(2)} | ${mib(r.diskB)} | ${a} | ${mib(r.diskBytes)} | ${r.runTrue.toFixed(2)} |`);
}
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
for (const sn of ['overlayfs', 'unionblob']) {
  const mine = results.filter((r) => r.snapshotter === sn);
  console.log(`${sn}: import b median ${median(mine.map((r) => r.importB)).toFixed(2)} s (${mine.map((r) => r.importB.toFixed(2)).join(', ')}), ` +
    `CPU median ${median(mine.map((r) => r.cpuB)).toFixed(2)} s (${mine.map((r) => r.cpuB.toFixed(2)).join(', ')})`);
}
console.log(JSON.stringify(results));
