// bench/lib: the run-length fs-verity digest of sparse files (checked against format/verity.ts
// on real bytes) and the SVG plots of docs/evaluation.md.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { verityDigest, verityDigestOfFile } from '../dist/format/verity.js';
import { sparseVerityDigest } from '../bench/lib/verity-zero.mjs';
import { linePlot, barChart, logTicks, linearTicks } from '../bench/lib/svg.mjs';
import { percentile, pairedRatio, summarize } from '../bench/lib/stats.mjs';

const B = 4096;
// Sizes around every boundary of the Merkle tree: one block, one full level-1 block (128
// hashes), one more, two levels full (128*128 blocks) and a ragged tail.
const SIZES = [0, 1, 4095, B, B + 1, 127 * B, 128 * B, 128 * B + 1, 129 * B + 7, 128 * 128 * B, 128 * 128 * B + 3 * B + 5];

test('all-zero files: the run-length digest equals format/verity.ts on the bytes', (t) => {
  for (const size of SIZES) {
    t.is(sparseVerityDigest(size).toString('hex'), verityDigest(Buffer.alloc(size)).toString('hex'), `size ${size}`);
  }
});

test('zeros with data chunks at the start, middle and end', (t) => {
  const marker = (s, n) => Buffer.from(s.repeat(Math.ceil(n / s.length)).slice(0, n));
  for (const size of [5 * B, 200 * B + 9, 128 * 128 * B + 2 * B]) {
    const chunks = [
      { offset: 0, data: marker('head', 5000) },
      { offset: Math.floor(size / B / 2) * B, data: marker('mid', B) },
      { offset: Math.floor((size - 1) / B) * B, data: marker('tail', size - Math.floor((size - 1) / B) * B) },
    ];
    const bytes = Buffer.alloc(size);
    for (const c of chunks) c.data.copy(bytes, c.offset);
    t.is(sparseVerityDigest(size, chunks).toString('hex'), verityDigest(bytes).toString('hex'), `size ${size}`);
  }
});

test('a real sparse file made with truncate hashes the same as its digest from the bytes', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-benchlib-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'sparse');
  const size = 300 * B + 123;
  const head = Buffer.from('object 7\n');
  fs.writeFileSync(f, head);
  fs.truncateSync(f, size);
  t.is(sparseVerityDigest(size, [{ offset: 0, data: head }]).toString('hex'), (await verityDigestOfFile(f)).toString('hex'));
});

test('misplaced chunks are refused', (t) => {
  t.throws(() => sparseVerityDigest(2 * B, [{ offset: 10, data: Buffer.from('x') }]), { message: /4096-aligned/ });
  t.throws(() => sparseVerityDigest(B, [{ offset: 0, data: Buffer.alloc(B + 1) }]), { message: /inside the file/ });
});

test('stats: percentile, spread and paired ratios', (t) => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  t.is(percentile(xs, 50), 50);
  t.is(percentile(xs, 99), 99);
  t.deepEqual(summarize([9, 10, 12]).median, 10);
  t.is(summarize([9, 10, 12]).spread, 0.2);
  const r = pairedRatio([2, 4, 6], [1, 2, 3]);
  t.is(r.median, 2);
  t.is(r.spread, 0);
});

test('svg axes: log ticks are the powers of ten, linear ticks round steps', (t) => {
  t.deepEqual(logTicks(1e4, 1e7), [1e4, 1e5, 1e6, 1e7]);
  t.deepEqual(logTicks(2e4, 3e5), [1e4, 1e5, 1e6]);
  t.deepEqual(linearTicks(0, 2.1), [0, 0.5, 1, 1.5, 2, 2.5]); // the last tick covers the top
});

test('svg line plot: points placed on the log-x axis, one polyline per series', (t) => {
  const svg = linePlot({ title: 'a<b', xLabel: 'files', yLabel: 'ms', series: [
    { name: 's1', points: [[1e4, 1], [1e5, 2], [1e6, 3]] },
    { name: 's2', points: [[1e4, 2], [1e6, NaN]] },
  ] });
  t.true(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  t.true(svg.includes('a&lt;b'));
  t.is(svg.match(/<polyline/g).length, 1); // s2 has one finite point: no line
  t.is(svg.match(/<circle/g).length, 4);
  // x: 1e4 at the left margin, 1e6 at the right end of the plot area, 1e5 half way
  const cx = [...svg.matchAll(/<circle cx="([\d.]+)"/g)].map((m) => Number(m[1]));
  t.deepEqual(cx.slice(0, 3), [70, 310, 550]);
  t.throws(() => linePlot({ title: 'x', xLabel: '', yLabel: '', series: [{ name: 'e', points: [] }] }), { message: /no points/ });
});

test('svg bar chart: one bar per value, whiskers for spread, native line at 1', (t) => {
  const svg = barChart({ title: 'r', yLabel: '× native', groups: [
    { label: 'walk', bars: [{ name: 'a', value: 1.5, spread: 0.1 }, { name: 'b', value: 0.5, spread: 0 }] },
    { label: 'read', bars: [{ name: 'a', value: 2, spread: NaN }] },
  ] });
  t.is(svg.match(/<rect x="[\d.]+" y="[\d.]+" width/g).length, 3 + 2); // 3 bars + 2 legend boxes
  t.is(svg.match(/stroke-dasharray/g).length, 1);
  t.is(svg.match(/<line x1="([\d.]+)" x2="\1" y1/g).length, 2); // the y axis and one whisker
});

// ---- the scale series' guest lines and the report's kernel columns ----------------------------

const SPARSE_SIZE = 8 * B;
const guestLines = (tail1) => [
  'UBS info kernel=6.12.1 cpus=2 mem-kB=4000000 reps=2',
  ...[1e4, 1e5].flatMap((n) => [1, 2].flatMap((rep) => [
    `UBS n=${n} cfg=ext4 test=mount rep=${rep} us=${2000 * rep}`,
    `UBS n=${n} cfg=unionblob test=mount rep=${rep} us=${1000 * rep}`,
    ...['ext4', 'unionblob'].flatMap((c) => ['cold', 'warm'].map((w) =>
      `UBS n=${n} cfg=${c} test=lookup-${w} rep=${rep} n=100 errors=0 p50_ns=${(c === 'ext4' ? 4000 : 2000) * (w === 'cold' ? 10 : 1)} p90_ns=1 p99_ns=${n / 10} max_ns=1 mean_ns=1`)),
  ])),
  'UBS info n=10000 slab-unionblob_inode-active=105 objsize=776',
  'UBS n=sparse cfg=unionblob test=mount rep=1 us=3000',
  ...['ext4', 'unionblob'].flatMap((c) => [
    `UBE cfg=${c} rep=1 END big/f0 ${SPARSE_SIZE} unionblob sparse object 0: head|${c === 'unionblob' ? tail1 : 'unionblob sparse object 0: tail'}`,
    `UBS n=sparse cfg=${c} test=ends-cold rep=1 n=1 errors=0 p50_ns=5 p90_ns=5 p99_ns=5 max_ns=5 mean_ns=${c === 'ext4' ? 1000000 : 3000000}`,
    `UBS n=sparse cfg=${c} test=lookup-warm rep=1 n=1 errors=0 p50_ns=500 p90_ns=5 p99_ns=900 max_ns=5 mean_ns=5`,
  ]),
  'UBS error n=10 cfg=ext4 test=mount rep=1: mount: No such device',
  'UBS end',
].join('\n');

test('scale guest lines: per size and config, the sparse read-back checked against the markers', async (t) => {
  const { parseGuest, readBackRight } = await import('../bench/scale/run.mjs');
  const g = parseGuest(guestLines('unionblob sparse object 0: tail'));
  t.deepEqual(g.info, { kernel: '6.12.1', cpus: 2, 'mem-kB': 4000000, reps: 2 });
  t.deepEqual(g.sizes['10000'].mount, { ext4: [0.002, 0.004], unionblob: [0.001, 0.002] });
  t.deepEqual(g.sizes['100000'].lookup.cold.unionblob.map((x) => x.p50_ns), [20000, 20000]);
  t.is(g.slab['10000']['slab-unionblob_inode-active'], 105);
  t.deepEqual(g.sparse.mount.unionblob, [0.003]);
  t.is(g.errors.length, 1);
  t.deepEqual(readBackRight(g.readBack, 1, SPARSE_SIZE), []);
  // a wrong tail, a missing file and a wrong size are each reported
  t.regex(readBackRight(parseGuest(guestLines('unionblob sparse object 0: head')).readBack, 1, SPARSE_SIZE)[0], /unionblob big\/f0: .*tail "unionblob sparse object 0: head"/);
  t.is(readBackRight(g.readBack, 2, SPARSE_SIZE).length, 2);
  t.is(readBackRight(g.readBack, 1, SPARSE_SIZE + B).length, 2);
});

/** A report's input: the scale suite alone, two sizes, with the guest's figures or without. */
async function scaleData(withKernel) {
  const { parseGuest } = await import('../bench/scale/run.mjs');
  const g = parseGuest(guestLines('unionblob sparse object 0: tail'));
  const look = (p50) => ({ n: 100, errors: 0, p50_ns: p50, p99_ns: p50 * 3 });
  const point = (n) => ({
    files: n, build: { wall: 2, rssMiB: 100 }, nativeBuild: { wall: 3 }, summary: { inodes: n }, bytesPerInode: 86, blobBytes: 86 * n,
    mount: { ext4: [0.02, 0.03], fuse: [0.01, 0.01] }, fuseRssKiB: [{ afterLookups: 2048 }],
    lookup: { cold: { ext4: [look(4000), look(4000)], fuse: [look(8000), look(8000)] }, warm: { ext4: [look(800), look(800)], fuse: [look(900), look(900)] } },
    stats: { mount: { ext4: summarize([0.02, 0.03]), fuse: summarize([0.01, 0.01]) } },
    ...(withKernel ? { kernel: g.sizes[String(n)] } : {}),
  });
  const sparse = {
    objects: 1, objectBytes: SPARSE_SIZE, apparentBytes: SPARSE_SIZE, storeDiskBytes: 8192, digestSeconds: 0.01, blobBytes: 16384, apparentSeen: SPARSE_SIZE,
    mount: [0.002], readTail: { ext4: [0.001], fuse: [0.002] }, lookup: { ext4: [look(200)], fuse: [look(300)] },
    stats: { mount: summarize([0.002]), readTail: { ext4: summarize([0.001]), fuse: summarize([0.002]) } },
    ...(withKernel ? { kernel: { ...g.sparse, readBackWrong: [], apparentSeen: SPARSE_SIZE } } : {}),
  };
  const load = { wall: 60, loadBefore: '1 1 1', loadAfter: '2 2 2', othersCores: 0.5, oursCores: 1 };
  return {
    machine: { cpu: 'x', cores: 2, ramGiB: 1, hostKernel: 'h', node: 'n', qemu: 'q', mergerfs: '-', erofsUtils: '-', libfuse: '-', e2fsprogs: '-', commit: 'c', date: '2026-01-01T00:00:00Z' },
    suites: { scale: { mode: 'full', date: '2026-01-01T00:00:00Z', command: 'node bench/scale/run.mjs', load, data: {
      opts: { lookups: 100, reps: 2 }, lean: 'lean', points: [point(1e4), point(1e5)], sparse, ...(withKernel ? { kernel: { info: g.info, errors: [] } } : {}) } } },
  };
}

test('report: kernel columns, guest lookup table and plot with the guest figures; FUSE only without', async (t) => {
  const { writeReport } = await import('../bench/lib/report.mjs');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-report-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const withKernel of [true, false]) {
    writeReport(await scaleData(withKernel), dir);
    const md = fs.readFileSync(path.join(dir, 'evaluation.md'), 'utf8');
    const plots = fs.readdirSync(path.join(dir, 'plots'));
    t.is(md.includes('| mount .ko (guest) | mount ext4 (guest) | .ko / ext4 |'), withKernel);
    t.is(plots.includes('scale-lookup-kernel.svg'), withKernel);
    t.true(plots.includes('scale-lookup.svg'));
    if (withKernel) {
      // mount: per round 1000/2000 and 2000/4000 µs -> ×0.50; cold p50 20 µs against 40 µs
      t.regex(md, /\| 10,000 \|.*\| 1\.50 ms ±33% \| 3\.00 ms ±33% \| ×0\.50 ±0% \|/);
      t.regex(md, /\| 100,000 \| 20 µs \| 40 µs \| ×0\.50 ±0% \|/);
      t.regex(md, /stops at 100,000 files/);
      t.regex(md, /\| stat \+ open \+ 2 reads .* \| 3\.00 ms \| 1\.00 ms \| ×3\.00 ±0% \|/);
      t.regex(md, /unionblob\.ko vs ext4 \(guest\): ×3\.00/); // listed where we lose
      t.regex(md, /read back right/);
    } else {
      t.regex(md, /The scale series runs on FUSE only here/);
      t.notRegex(md, /\(guest\)/);
    }
  }
});

test('report: the hardening tables come from hardening.md beside it, and no section without it', async (t) => {
  const { writeReport } = await import('../bench/lib/report.mjs');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-report-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  writeReport(await scaleData(false), dir);
  t.notRegex(fs.readFileSync(path.join(dir, 'evaluation.md'), 'utf8'), /## Hardening/);
  fs.writeFileSync(path.join(dir, 'hardening.md'), ['# H', '', '| target | executions |', '|---|---|', '| `fuzz_x` | 12,345,678 in 9 s |', '',
    'text', '', '| kernel | mounted |', '|---|---|', '| 6.1 | 597 |', ''].join('\n'));
  writeReport(await scaleData(false), dir);
  const md = fs.readFileSync(path.join(dir, 'evaluation.md'), 'utf8');
  t.regex(md, /## Hardening\n[^]*\| `fuzz_x` \| 12,345,678 in 9 s \|\n\n[^]*\| 6\.1 \| 597 \|\n/);
  t.notRegex(md, /\| `fuzz_x` [^]*\| `fuzz_x` /); // once
});

// ---- bench/kernel/report.mjs on the host's configs, and the report's host table -------------------

/** UBB lines of two rounds: fuse takes twice ext4's time, mergerfs four times; FUSE servers' RSS. */
function hostLines(cfgs) {
  const k = { ext4: 1, fuse: 2, mergerfs: 4, erofs: 1, overlay: 1, unionblob: 3 };
  return [
    `UBB info kernel=6.18 cpus=2 mem-kB=4000000 reps=2 images=s${cfgs ? ` cfgs=${cfgs} where=host mergerfs=2.33.5` : ''}`,
    ...[1, 2].flatMap((rep) => (cfgs ?? 'ext4,erofs,overlay,unionblob').split(',').flatMap((c) => [
      `UBB img=s cfg=${c} test=walk-warm rep=${rep} entries=10 dirs=2 errors=0 us=${100000 * rep * k[c]}`,
      `UBB img=s cfg=${c} test=mem rep=${rep} mount-slab-kB=0 mount-used-kB=${c === 'ext4' ? 100 : 2000} walk-slab-kB=5 walk-used-kB=9` +
        `${c === 'fuse' || c === 'mergerfs' ? ` mount-rss-kB=1500 walk-rss-kB=${3000 * rep}` : ''} us=5`,
    ])),
    'UBB end',
  ].join('\n');
}

async function reportOf(lines) {
  const { spawnSync } = await import('node:child_process');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-hostreport-'));
  fs.writeFileSync(path.join(dir, 'raw.log'), lines);
  const r = spawnSync(process.execPath, ['bench/kernel/report.mjs', path.join(dir, 'raw.log'), '--json', path.join(dir, 'out.json')], { encoding: 'utf8' });
  return { dir, r, json: r.status === 0 ? JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8')) : null };
}

test('bench report: the configs a run names, no target column without the module; the guest\'s four by default', async (t) => {
  const host = await reportOf(hostLines('ext4,fuse,mergerfs'));
  t.teardown(() => fs.rmSync(host.dir, { recursive: true, force: true }));
  t.is(host.r.status, 0, host.r.stderr);
  t.regex(host.r.stdout, /^Run on the host: Linux 6\.18, 2 CPUs/);
  t.regex(host.r.stdout, /\| \| ext4 \(unpacked\) \| unionblob-fuse \| mergerfs \|\n/);
  t.regex(host.r.stdout, /\| stat walk, warm \| 0\.150 s ±33% \| 0\.300 s ±33% \*\*×2\.00\*\* \| 0\.600 s ±33% \*\*×4\.00\*\* \|\n/);
  t.notRegex(host.r.stdout, /target|All targets met/);
  // the servers' RSS: no ext4 base, so figures without ratios
  t.deepEqual(host.json.images.s['mem-rss-walk'].cfgs.fuse.values, [3000, 6000]);
  t.is(host.json.images.s['mem-rss-walk'].cfgs.fuse.ratio, null);
  t.is(host.json.images.s['walk-warm'].cfgs.mergerfs.ratio, 4);

  const guest = await reportOf(hostLines(undefined));
  t.teardown(() => fs.rmSync(guest.dir, { recursive: true, force: true }));
  t.regex(guest.r.stdout, /^Guest: Linux 6\.18/);
  t.regex(guest.r.stdout, /\| \| ext4 \(unpacked\) \| erofs \| overlayfs \| unionblob \| target \(unionblob\) \|\n/);
  t.regex(guest.r.stdout, /Targets missed: s walk-warm\./); // ×3 > ×1.2
  t.false('mem-rss-walk' in guest.json.images.s);

  // docs/evaluation.md: the host table with the kernel table's rows, losses of both FUSE modes
  const { writeReport } = await import('../bench/lib/report.mjs');
  const load = { wall: 60, loadBefore: '1 1 1', loadAfter: '2 2 2', othersCores: 0.5, oursCores: 1 };
  const machine = { cpu: 'x', cores: 2, ramGiB: 1, hostKernel: 'h', node: 'n', qemu: 'q', mergerfs: '-', erofsUtils: '-', libfuse: '-', e2fsprogs: '-', commit: 'c', date: '2026-01-01T00:00:00Z' };
  const suite = (data) => ({ mode: 'quick', date: '2026-01-01T00:00:00Z', command: 'bash bench/x/run.sh', load, data });
  writeReport({ machine, suites: { kernel: suite(guest.json), host: suite(host.json) } }, host.dir);
  const md = fs.readFileSync(path.join(host.dir, 'evaluation.md'), 'utf8');
  t.regex(md, /## Every workload on the host \(FUSE, mergerfs\)/);
  t.regex(md, /\|  \| ext4 \(native\) \| erofs \| overlayfs \| unionblob-fuse \| unionblob-fuse shared \| mergerfs \|\n/);
  t.regex(md, /\| stat walk, warm \| 150 ms ±33% \| – \| – \| 300 ms ±33% \*\*×2\.00 ±0%\*\* \| – \| 600 ms ±33% \*\*×4\.00 ±0%\*\* \|\n/);
  t.regex(md, /\| FUSE server resident memory after mount \+ stat walk \| – \| – \| – \| 4500 kB ±33% \| – \| 4500 kB ±33% \|\n/);
  t.regex(md, /- \*\*host \(unionblob-fuse\), synthetic image .*: stat walk, warm: ×2\.00 ±0%\*\*/);
  t.notRegex(md, /host \(mergerfs\)/); // mergerfs is a reference, not ours
  t.regex(md, /- \*\*kernel, synthetic image .*: stat walk, warm: ×3\.00 ±0%\*\*/);
  t.true(fs.readdirSync(path.join(host.dir, 'plots')).includes('host-s.svg'));
});

test('report: the build section sets cfs build against the bound, the rebuild and the bound + files, and says why it loses', async (t) => {
  const { writeReport } = await import('../bench/lib/report.mjs');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ub-report-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const run = (build, lb) => ({ build: { wall: build, rssMiB: 150 }, rebuild: { wall: lb * 1.5 }, umoci: { wall: build * 2 }, lb: { wall: lb }, lbObjects: { wall: build / 1.25 } });
  const load = { wall: 60, loadBefore: '1 1 1', loadAfter: '1 1 1', othersCores: 0, oursCores: 1 };
  writeReport({
    machine: { cpu: 'x', cores: 2, ramGiB: 1, hostKernel: 'h', node: 'n', qemu: 'q', mergerfs: '-', erofsUtils: '-', libfuse: '-', e2fsprogs: '-', commit: 'c', date: '2026-01-01T00:00:00Z' },
    suites: { build: { mode: 'full', date: '2026-01-01T00:00:00Z', command: 'node bench/build/run.mjs', load, data: {
      results: [{ name: 'img', summary: { blobBytes: 9000, inodes: 100 }, runs: [run(2, 1), run(3, 1), run(4, 2)] }] } } },
  }, dir);
  const md = fs.readFileSync(path.join(dir, 'evaluation.md'), 'utf8');
  // per run 2/1, 3/1, 4/2 -> median ×2.00; rebuild ×1.50; bound + files ×1.25 of it
  t.regex(md, /\| img \| 3 \| 3\.00 s .*\| ×0\.50 ±0% \| 1\.00 s \| ×2\.00 ±50% \| ×1\.50 ±0% \| 2\.40 s \| ×1\.25 ±0% \| 90 \|/);
  t.regex(md, /build, img: cfs build vs the lower bound: ×2\.00 ±50%\*\*: the bound writes nothing.*cfs build ×1\.25 ±0% of it; with every object present a build takes ×1\.50 ±0%/);
});
