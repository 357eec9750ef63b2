// docs/evaluation.md and docs/plots/*.svg from the figures bench/run.mjs collected
// (docs/evaluation.json). Every comparison is a ratio against the native limit of the same run
// (ext4 holding the unpacked tree), with the spread of the repeated runs.
import fs from 'node:fs';
import path from 'node:path';
import { barChart, linePlot } from './svg.mjs';
import { pairedRatio, summarize } from './stats.mjs';

const LOSS = 1.1; // a ratio above this is listed under "where we lose"

const pct = (x) => (Number.isFinite(x) ? `±${Math.round(x * 100)}%` : '');
const ratio = (r) => (r && Number.isFinite(r.median) ? `×${r.median.toFixed(2)}${r.spread !== undefined && Number.isFinite(r.spread) ? ` ${pct(r.spread)}` : ''}` : '–');
const secs = (s) => (s < 0.01 ? `${(s * 1000).toFixed(2)} ms` : s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(s < 10 ? 2 : 1)} s`);
const us = (ns) => `${(ns / 1000).toFixed(ns < 10000 ? 2 : 0)} µs`;
const int = (n) => Math.round(n).toLocaleString('en-US');
const row = (cells) => `| ${cells.join(' | ')} |`;
const head = (cells) => [row(cells), `|${cells.map((_, i) => (i ? '---:' : '---')).join('|')}|`];

/** Collects sections, plots and the list of losses while the report is written. */
function doc(plotsDir) {
  const lines = [], losses = [], plots = [];
  return {
    lines, losses, plots,
    add: (...ls) => lines.push(...ls),
    lose: (where, r, why) => { if (r && r.median > LOSS) losses.push({ where, r, why }); },
    plot: (name, svg, caption) => {
      fs.writeFileSync(path.join(plotsDir, name), svg);
      plots.push(name);
      lines.push('', `![${caption}](plots/${name})`);
    },
  };
}

// ---- kernel -----------------------------------------------------------------------------

const KCFG = { ext4: 'ext4 (native)', erofs: 'erofs', overlay: 'overlayfs', unionblob: 'unionblob.ko' };
// Why unionblob.ko loses on a row (bench/kernel/RESULTS.md has the measurements behind these).
const KWHY = {
  'open-warm': 'every open of an object-backed file opens a second file (the object, a backing file: file allocation, the store\'s open and the LSM hooks) and every close releases two',
  'read-warm': 'the per-open cost of the backing file; the reads themselves run at ext4\'s speed',
  'read-cold': 'cold opens walk the store: objects sit in 256 fan-out directories, not next to each other in walk order as an unpacked tree\'s files are, so ext4\'s inode-table readahead helps less; the blob pages come on top',
  'par-1': 'the per-open backing file, as in open+read', 'par-2': 'the per-open backing file, as in open+read', 'par-4': 'the per-open backing file, as in open+read',
  'mem-walk': 'our inodes come on top of the object inodes and dentries they keep cached (the object path is kept after the first open)',
  'mem-walk-slab': 'our inodes come on top of the object inodes and dentries they keep cached',
  'mem-mount': 'mount reads the header, the root inode and resolves the store directories (noise at this scale: page-granular deltas)',
  'mount-cold': 'mount(2) reads the blob header and root inode and resolves the store paths (ext4\'s row is the whole data disk)',
  'mount-warm': 'mount(2) reads the blob header and root inode and resolves the store paths',
  'rand-cold': 'the object sits on ext4 below us: a cold 4 KiB read goes through two filesystems\' read paths',
  'seq-cold': 'reads go through the object\'s page cache on the store filesystem',
  'share': 'the blob pages are page cache too',
};

// Why unionblob-fuse (either cache mode) loses on a row of the host suite (bench/host/README.md).
const HWHY = {
  'walk-cold': 'every directory and inode the walk meets is a LOOKUP/READDIRPLUS round trip to the server process (context switches on a 2-core machine), then the server reads the blob pages',
  'read-cold': 'each first open and read of a file is a round trip to the server, which opens the object in the store and reads it cold',
  'open-warm': 'cache=shared sends an OPEN per open() (the server opens the object and registers it as a passthrough backing file) and a RELEASE per close(); cache=private opens without a round trip',
  'read-warm:fuse': 'the open is in the kernel (no OPEN) and the pages are the mount\'s own: what is left is FUSE\'s attribute and permission checks per open, and the noise of the shared machine',
  'read-warm:fuse-shared': 'an OPEN round trip to the server per open() (it opens the object and registers it as a passthrough backing file) and a RELEASE per close()',
  'par-1': 'as open+read every file, warm', 'par-2': 'as open+read every file, warm; the server\'s threads share the 2 cores with the readers', 'par-4': 'as open+read every file, warm; the server\'s threads share the 2 cores with the readers',
  'seq-cold': 'cache=private: every page is a READ to the server (in max_read-sized requests) instead of the filesystem\'s readahead straight from disk',
  'seq-warm:fuse-shared': 'the reads go through FUSE\'s passthrough to the object\'s page cache: one more layer per read than ext4',
  'seq-warm': 'cache=private: the mount\'s page cache holds the file in small folios where ext4 uses large ones, so a warm read walks many more of them (bench/mount/README.md measures the folio sizes)',
  'rand-cold': 'every cold 4 KiB read is a READ round trip to the server, which reads the object on the store\'s filesystem',
  'rand-cold:fuse-shared': 'cold reads go through passthrough to the object on the store\'s filesystem: two filesystems\' read paths',
  'mount-cold': 'starting a server process (exec, libfuse, mmap and check of the blob, the kernel\'s INIT) against one mount(2)',
  'mount-warm': 'starting a server process against one mount(2)',
  'mem-mount': 'the server process (its code, libfuse, threads and the mapped blob pages) comes on top of the kernel\'s mount',
  'mem-walk': 'the server\'s resident blob pages and the FUSE inodes and dentries',
  'mem-walk-slab': 'FUSE inodes and dentries in the kernel',
  share: 'cache=private caches each mount\'s pages in the mount (two images: two copies of a shared file); shared: the store\'s pages once, plus the blobs',
  'share-a': 'the blob\'s pages come on top of the files\' own',
};

/**
 * One table per image of bench/kernel/report.mjs's JSON: every config's median and spread, and
 * for all but ext4 the per-round ratio to ext4; rows of `ours` above ×LOSS go under "where we
 * lose" with why['ROW:CFG'] or why[ROW]. `cfgs` maps config ids to column labels, in order.
 */
function configSection(d, res, { title, short, where, intro, cfgs, ours, why, plot }) {
  const k = res.data;
  d.add('', `## ${title}`, '', intro(k));
  for (const [img, rows] of Object.entries(k.images ?? {})) {
    d.add('', `### ${imageLabel(img)}`, '');
    d.add(...head(['', ...Object.values(cfgs)]));
    const groups = [];
    for (const [id, r] of Object.entries(rows)) {
      // memory deltas below 1 MiB natively are page-granular noise: no ratio to them
      const noRatio = r.unit === 'kB' && Math.abs(r.cfgs.ext4?.median ?? 0) < 1024;
      const cells = Object.keys(cfgs).map((c) => {
        const v = r.cfgs[c];
        if (!v) return '–';
        const abs = kfmt(v.median, r.unit) + ` ${pct(v.spread)}`;
        return c === 'ext4' || v.ratio === null || noRatio ? abs : `${abs} **${ratio({ median: v.ratio, spread: v.ratioSpread })}**`;
      });
      d.add(row([r.label, ...cells]));
      for (const c of ours) {
        const v = r.cfgs[c];
        if (v && v.ratio !== null && !noRatio) d.lose(`${where}${ours.length > 1 ? ` (${cfgs[c]})` : ''}, ${imageLabel(img)}: ${r.label}`, { median: v.ratio, spread: v.ratioSpread }, why[`${id}:${c}`] ?? why[id] ?? '');
      }
      if (r.unit !== 'kB' && r.cfgs.ext4?.median > 0) {
        groups.push({ label: id, bars: Object.keys(cfgs).filter((c) => c !== 'ext4' && r.cfgs[c]).map((c) => ({ name: cfgs[c], value: r.cfgs[c].ratio, spread: r.cfgs[c].ratioSpread })) });
      }
    }
    if (groups.length) d.plot(`${plot}-${img}.svg`, barChart({ title: `${short}, ${imageLabel(img)}: time / ext4 (lower is better)`, yLabel: '× ext4, same run', groups }), `${plot} ${img}`);
    const share = rows.share;
    if (share) {
      d.plot(`${plot}-share.svg`, barChart({ title: `${short}: page cache after reading images a and b (MiB)`, yLabel: 'MiB', reference: share.cfgs.ext4.median / 1024,
        groups: [{ label: 'a then b', bars: Object.keys(cfgs).filter((c) => share.cfgs[c]).map((c) => ({ name: cfgs[c], value: share.cfgs[c].median / 1024, spread: share.cfgs[c].spread })) }] }), 'page cache after two images');
    }
  }
  if (k.errors?.length) d.add('', 'Errors:', '', ...k.errors.map((e) => `    ${e}`));
}

function kernelSection(d, res) {
  configSection(d, res, {
    title: 'Kernel module (guest)', short: 'Kernel', where: 'kernel', cfgs: KCFG, ours: ['unionblob'], why: KWHY, plot: 'kernel',
    intro: (k) => `${k.info?.kernel ? `Guest: Debian's Linux ${k.info.kernel} under qemu TCG, ${k.info.cpus} vCPUs, ${Math.round(k.info['mem-kB'] / 1024)} MiB, ` : ''}` +
      'every store and tree on emulated NVMe disks (ext4 data disk, one disk per erofs image). ' +
      `Repetitions: ${k.info?.reps ?? '?'}. Each cell: the median, its spread (largest deviation of one run from the median), ` +
      'and for the others the ratio to ext4: the median over the rounds of config/ext4 in the same round (lower is better), ± the spread of those per-round ratios. ' +
      'Images, disks and what each test times: [bench/kernel/RESULTS.md](../bench/kernel/RESULTS.md).',
  });
}

const HCFG = { ext4: 'ext4 (native)', erofs: 'erofs', overlay: 'overlayfs', fuse: 'unionblob-fuse', 'fuse-shared': 'unionblob-fuse shared', mergerfs: 'mergerfs' };

function hostSection(d, res) {
  configSection(d, res, {
    title: 'Every workload on the host (FUSE, mergerfs)', short: 'Host', where: 'host', cfgs: HCFG, ours: ['fuse', 'fuse-shared'], why: HWHY, plot: 'host',
    intro: (k) => `The kernel suite's workloads, script and timer run on the host${k.info?.kernel ? ` (Linux ${k.info.kernel}, ${k.info.cpus} CPUs)` : ''}, ` +
      'over the same data: ext4 data disk and erofs images on read-only loop devices; unionblob-fuse with its default options (`fuse`) and with `cache=shared` (kernel passthrough), ' +
      `both over the blob and store on the data disk; mergerfs ${k.info?.mergerfs ?? ''} with its default options over the unpacked tree. ` +
      'FUSE mount time: from starting the server until its mount answers a stat; memory after mount includes the server process (MemAvailable drop; its RSS on its own row). ' +
      `Repetitions: ${k.info?.reps ?? '?'}; cells as in the kernel table. [bench/host/README.md](../bench/host/README.md).`,
  });
}

function kfmt(v, unit) {
  if (unit === 'kB') return Math.abs(v) >= 10240 ? `${(v / 1024).toFixed(0)} MiB` : `${Math.round(v)} kB`;
  return secs(v / 1e6);
}

function imageLabel(img) {
  return { a: 'Debian image `a` (3 layers, ~7,000 entries, 215 MB)', s: 'synthetic image (small files + one big file)', ab: 'images `a` and `b` sharing a base layer' }[img] ?? img;
}

// ---- FUSE (bench/mount) -------------------------------------------------------------------

const FWHY = {
  readall: 'a FUSE open of a file the kernel has not cached is a round trip to the server process (and, in passthrough mode, opening the object and registering it as a backing file); mergerfs pays the same',
  'readall-cold': 'cold: the LOOKUP and OPEN round trips to the server, then the object\'s own cold read on the store',
  seq: 'data crosses FUSE unless the kernel\'s passthrough serves it from the object',
  'seq-cold': 'data crosses FUSE unless the kernel\'s passthrough serves it from the object',
  walk: 'first lookups and readdirs are round trips to the server; warm they stay in the kernel\'s caches',
};

function fuseSection(d, res) {
  const m = res.data;
  d.add('', '## FUSE server (host)', '');
  d.add('`bench/mount/run.mjs`: the same tree unpacked on the host\'s ext4 (native), served by unionblob-fuse, mergerfs over the unpacked tree and, where bench/mount has them, more views. ' +
    'Warm = after one untimed run; ratios to native per round, with the spread of the per-round ratios.' + (res.note ? ` **${res.note}.**` : ''));
  for (const [img, r] of Object.entries(m.images ?? {})) {
    const results = r.results ?? {};
    const views = [...new Set(Object.values(results).flatMap((w) => Object.keys(w)))];
    const others = views.filter((v) => v !== 'native');
    d.add('', `### ${img}${r.description ? `: ${r.description}` : ''}`, '');
    d.add(...head(['workload', 'native', ...others]));
    const groups = [];
    for (const [w, by] of Object.entries(results)) {
      const nat = by.native?.runs ?? [];
      const cells = others.map((v) => {
        const rr = by[v] ? oneOrPaired(by[v].runs, nat) : null;
        if (rr && v.startsWith('fuse')) d.lose(`FUSE (${v}), ${img}: ${w}`, rr, FWHY[w] ?? '');
        return rr ? `${secs(summarize(by[v].runs).median)} **${ratio(rr)}**` : '–';
      });
      d.add(row([w, nat.length ? `${secs(summarize(nat).median)} ${nat.length > 1 ? pct(summarize(nat).spread) : ''}` : '–', ...cells]));
      groups.push({ label: w, bars: others.filter((v) => by[v]).map((v) => { const rr = oneOrPaired(by[v].runs, nat); return { name: v, value: rr.median, spread: rr.spread }; }) });
    }
    if (groups.length) d.plot(`fuse-${img}.svg`, barChart({ title: `FUSE, ${img}: time / native (lower is better)`, yLabel: '× native, same run', groups }), `fuse ${img}`);
  }
}

/** A single run (bench/mount's table) has no spread to show. */
function oneOrPaired(xs, native) {
  const r = pairedRatio(xs, native);
  return xs.length < 2 ? { median: r.median, spread: NaN } : r;
}

// ---- build --------------------------------------------------------------------------------

function buildSection(d, res) {
  const b = res.data;
  d.add('', '## Build (host)', '');
  d.add('`bench/build/run.mjs`: `cfs build` into an empty store against `umoci unpack` of the same image (the native counterpart: it writes the unpacked tree), ' +
    'against the lower bound (decompress + parse + fs-verity hash of every file, nothing written) and against that bound plus writing every distinct content as an object file the store\'s way on one thread, then one syncfs ' +
    '("bound + files": what the issue\'s bound leaves out and any store must pay). "rebuild": the same build again, every object already present. Ratios per run, median ± spread.');
  d.add('', ...head(['image', 'runs', 'cfs build', 'peak RSS', 'umoci unpack', 'build / umoci', 'lower bound', 'build / lower bound', 'rebuild / lower bound', 'bound + files', 'build / (bound + files)', 'blob B/inode']));
  for (const r of b.results ?? []) {
    const w = (k) => r.runs.map((x) => x[k]?.wall).filter(Number.isFinite);
    const build = w('build'), umoci = w('umoci'), lb = w('lb'), rebuild = w('rebuild'), lbObjects = w('lbObjects');
    const paired = (xs, ys) => (ys.length && xs.length === ys.length ? pairedRatio(xs, ys) : null);
    const vsUmoci = paired(build, umoci), vsLb = paired(build, lb), rebuildVsLb = paired(rebuild, lb), vsLbObjects = paired(build, lbObjects);
    if (vsUmoci) d.lose(`build, ${r.name}: cfs build vs umoci unpack`, vsUmoci, 'cfs build hashes every file (fs-verity SHA-256 Merkle tree), writes each object and the blob and ends with a syncfs; umoci unpack only writes the files');
    if (vsLb) d.lose(`build, ${r.name}: cfs build vs the lower bound`, vsLb, `the bound writes nothing; creating the object files and syncing them is most of the difference: the bound plus only that, on one thread, takes ${ratio(paired(lbObjects, lb))} of the bound, and cfs build ${ratio(vsLbObjects)} of it${rebuildVsLb ? `; with every object present a build takes ${ratio(rebuildVsLb)} of the bound (parsing into the tree, the layer digests, the blob and its fsync)` : ''} (bench/build/RESULTS.md)`);
    const rss = summarize(r.runs.map((x) => x.build.rssMiB));
    const bpi = r.summary?.blobBytes && r.summary?.inodes ? (r.summary.blobBytes / r.summary.inodes).toFixed(0) : '–';
    const med = (xs) => (xs.length ? secs(summarize(xs).median) : '–');
    d.add(row([r.name, String(r.runs.length), `${secs(summarize(build).median)} ${pct(summarize(build).spread)}`, `${rss.median.toFixed(0)} MiB`,
      med(umoci), ratio(vsUmoci), med(lb), ratio(vsLb), ratio(rebuildVsLb), med(lbObjects), ratio(vsLbObjects), bpi]));
  }
}

// ---- scale --------------------------------------------------------------------------------

function scaleSection(d, res) {
  const s = res.data;
  const pts = s.points ?? [];
  const kpts = pts.filter((p) => p.kernel?.lookup);
  d.add('', `## Scale series (host, FUSE${kpts.length ? '; guest, unionblob.ko' : ''})`, '');
  d.add(`Images: ${s.lean}. Native limit: the same layer untarred onto a fresh ext4 (loop device, \`inline_data\` so tiny files need no data block, as they need none in the blob). ` +
    'Mount: unionblob-fuse returning once the mount exists against mount(8) of the ext4, both after drop_caches. ' +
    `Lookups: fstatat() of ${s.opts?.lookups ?? '?'} random paths, each timed (bench/scale/lookup.c), cold (after drop_caches) and warm; ${s.opts?.reps ?? '?'} rounds. ` +
    (kpts.length ? `Module: ${guestLine(s.kernel)}` : 'The kernel module is not in this series in this run (bench/scale/run.mjs --no-kernel, or its figures predate it).'));
  if (s.kernel?.error) d.add('', `**The kernel guest failed: ${s.kernel.error}.**`);
  if (s.kernel?.errors?.length) d.add('', 'Guest errors:', '', ...s.kernel.errors.map((e) => `    ${e}`));
  const kcols = kpts.length ? ['mount .ko (guest)', 'mount ext4 (guest)', '.ko / ext4'] : [];
  d.add('', ...head(['files', 'cfs build', 'tar -x (native)', 'build / tar -x', 'peak RSS', 'blob B/inode', 'mount FUSE', 'mount ext4', 'FUSE / ext4', 'server RSS', ...kcols]));
  for (const p of pts) {
    const mf = p.stats.mount.fuse, me = p.stats.mount.ext4;
    const mr = pairedRatio(p.mount.fuse, p.mount.ext4);
    const rss = summarize(p.fuseRssKiB.map((x) => x.afterLookups));
    const km = p.kernel ? mountCells(p.kernel.mount) : null;
    d.add(row([int(p.files), secs(p.build.wall), secs(p.nativeBuild.wall), `×${(p.build.wall / p.nativeBuild.wall).toFixed(2)}`, `${p.build.rssMiB.toFixed(0)} MiB`,
      p.bytesPerInode.toFixed(1), `${secs(mf.median)} ${pct(mf.spread)}`, `${secs(me.median)} ${pct(me.spread)}`, ratio(mr), `${(rss.median / 1024).toFixed(1)} MiB`,
      ...(kcols.length ? km?.cells ?? ['–', '–', '–'] : [])]));
    d.lose(`scale ${int(p.files)} files: cfs build vs tar -x`, { median: p.build.wall / p.nativeBuild.wall }, 'cfs build parses the tar the same way, then also encodes the blob and syncs; node\'s start-up (~0.1 s) weighs on small images');
    d.lose(`scale ${int(p.files)} files: FUSE mount vs ext4 mount`, mr, 'the FUSE mount starts a server process, maps and checks the blob header and root, and waits for the kernel\'s INIT');
    if (km) d.lose(`scale ${int(p.files)} files: unionblob.ko mount vs ext4 mount (guest)`, km.r, 'mount(2) reads the blob header and root inode from the blob disk (cold) and resolves the store directory');
  }
  for (const p of pts.filter((q) => q.heapMiB)) d.add('', `${int(p.files)} files: \`cfs build\` ran as \`node --max-old-space-size=${p.heapMiB}\`: node's default heap limit (about 4 GiB on this machine) aborts it at this size (a first attempt died in a V8 Map rehash).`);
  for (const sk of s.skipped ?? []) d.add('', `**Not measured: ${sk.why}.**`);
  d.add('', 'Lookup latency per path, host (median over the rounds of each round\'s p50 and p99):', '');
  lookupTable(d, pts, (p) => p.lookup, 'fuse', ['FUSE', 'ext4'], 'FUSE vs ext4', {
    cold: 'a cold lookup is one FUSE round trip per path component to the server (the blob pages themselves are read from the host\'s page cache or disk)',
    warm: 'warm lookups stay in the dentry cache; FUSE adds its d_revalidate check on every path component (a timeout comparison, no round trip with the server\'s 1-year timeouts)' });
  if (kpts.length) {
    d.add('', 'Lookup latency per path, guest (unionblob.ko against the same tree on ext4 in the guest, both on NVMe; TCG: compare the ratios, not the µs with the host\'s):', '');
    lookupTable(d, kpts, (p) => p.kernel.lookup, 'unionblob', ['.ko', 'ext4'], 'unionblob.ko vs ext4 (guest)', {
      cold: 'a cold lookup reads the directory entries and the inode from the blob file\'s page cache (read_mapping_folio on the ext4 below): each blob block comes through two filesystems\' read paths',
      warm: 'warm lookups are dentry-cache hits and a stat of an in-memory inode on both sides; what is left is noise at this level' });
  }
  if (pts.length > 1) {
    const xs = (f) => pts.map((p) => [p.files, f(p)]);
    d.plot('scale-build.svg', linePlot({ title: 'Build time against the number of files', xLabel: 'files', yLabel: 'seconds', logY: true, series: [
      { name: 'cfs build', points: xs((p) => p.build.wall) }, { name: 'tar -x onto ext4', points: xs((p) => p.nativeBuild.wall) }] }), 'build time');
    d.plot('scale-per-inode.svg', linePlot({ title: 'Per inode: blob bytes and build peak RSS', xLabel: 'files', yLabel: 'bytes per inode', logY: true, series: [
      { name: 'blob bytes / inode', points: xs((p) => p.bytesPerInode) }, { name: 'peak RSS / inode', points: xs((p) => (p.build.rssMiB * 2 ** 20) / p.summary.inodes) }] }), 'bytes per inode');
    const kmed = (p, c) => (p.kernel?.mount?.[c] ? summarize(p.kernel.mount[c]).median * 1000 : NaN);
    d.plot('scale-mount.svg', linePlot({ title: 'Mount time (median) against the number of files', xLabel: 'files', yLabel: 'ms', series: [
      { name: 'unionblob-fuse', points: xs((p) => p.stats.mount.fuse.median * 1000) }, { name: 'ext4 (native)', points: xs((p) => p.stats.mount.ext4.median * 1000) },
      ...(kpts.length ? [{ name: 'unionblob.ko (guest)', points: xs((p) => kmed(p, 'unionblob')) }, { name: 'ext4 (guest)', points: xs((p) => kmed(p, 'ext4')) }] : [])] }), 'mount time');
    const lk = (get, names) => (w, c, q) => ({ name: `${w} ${q} ${names[c]}`, points: pts.filter(get).map((p) => [p.files, summarize(get(p)[w][c].map((x) => x[`${q}_ns`])).median / 1000]) });
    const series = (f, c) => [f('cold', c, 'p50'), f('cold', 'ext4', 'p50'), f('cold', c, 'p99'), f('cold', 'ext4', 'p99'), f('warm', c, 'p50'), f('warm', 'ext4', 'p50')];
    d.plot('scale-lookup.svg', linePlot({ title: 'Lookup latency of random paths (host)', xLabel: 'files', yLabel: 'µs per fstatat()', logY: true,
      series: series(lk((p) => p.lookup, { fuse: 'FUSE', ext4: 'ext4' }), 'fuse') }), 'lookup latency');
    if (kpts.length > 1) {
      d.plot('scale-lookup-kernel.svg', linePlot({ title: 'Lookup latency of random paths (guest, TCG)', xLabel: 'files', yLabel: 'µs per fstatat()', logY: true,
        series: series(lk((p) => p.kernel?.lookup, { unionblob: '.ko', ext4: 'ext4' }), 'unionblob') }), 'lookup latency in the guest');
    }
  }
  const sp = s.sparse;
  if (sp) {
    d.add('', `### ${(sp.apparentBytes / 1e12).toFixed(2)} TB of sparse objects`, '');
    d.add(`${sp.objects} objects of ${(sp.objectBytes / 2 ** 30).toFixed(0)} GiB each (a marker block at the start and in the last block, holes between), ` +
      `${(sp.apparentBytes / 1e12).toFixed(2)} TB apparent size in ${(sp.storeDiskBytes / 2 ** 20).toFixed(1)} MiB of disk. Their fs-verity digests were computed run-length ` +
      `(bench/lib/verity-zero.mjs, checked against format/verity.ts in test/bench-lib.test.mjs) in ${secs(sp.digestSeconds)} for all of them; the blob (written by format/encode) is ${int(sp.blobBytes)} bytes. ` +
      `Through unionblob-fuse, stat reported ${(sp.apparentSeen / 1e12).toFixed(2)} TB and the markers at offset 0 and at the last block of every file read back right. Native: the same object files hardlinked into a directory on ext4.`);
    const rt = pairedRatio(sp.readTail.fuse, sp.readTail.ext4);
    const lk = (c, q) => summarize(sp.lookup[c].map((x) => x[`${q}_ns`])).median;
    const k = sp.kernel;
    if (k) {
      d.add('', `In the guest (unionblob.ko), blob, store and the native side (the objects hardlinked into a directory) are copied, holes kept, onto one ext4 NVMe disk (mkfs.ext4 -d); ext4 (guest) reads that directory: ` +
        (k.readBackWrong.length ? `**${k.readBackWrong.length} reads came back wrong**: ${k.readBackWrong.slice(0, 3).join('; ')}.`
          : `stat reported ${(k.apparentSeen / 1e12).toFixed(2)} TB through the module and the head and last-block markers of every file read back right, through the module and through ext4 (checked on the host against what was written).`));
    }
    const kr = k ? pairedRatio(k.ends.unionblob.map((x) => x.mean_ns), k.ends.ext4.map((x) => x.mean_ns)) : null;
    const kl = (c, q) => summarize(k.lookup.warm[c].map((x) => x[`${q}_ns`])).median;
    const kcells = (cells) => (k ? cells() : []);
    d.add('', ...head(['', 'unionblob-fuse', 'ext4 (native)', 'ratio', ...kcells(() => ['unionblob.ko (guest)', 'ext4 (guest)', 'ratio'])]));
    d.add(row(['mount', `${secs(sp.stats.mount.median)} ${pct(sp.stats.mount.spread)}`, '–', '', ...kcells(() => [`${secs(summarize(k.mount.unionblob).median)} ${pct(summarize(k.mount.unionblob).spread)}`, '–', ''])]));
    d.add(row(['stat + open + 2 reads (head, last block) per file, cold', secs(sp.stats.readTail.fuse.median), secs(sp.stats.readTail.ext4.median), ratio(rt),
      ...kcells(() => [secs(summarize(k.ends.unionblob.map((x) => x.mean_ns)).median / 1e9), secs(summarize(k.ends.ext4.map((x) => x.mean_ns)).median / 1e9), ratio(kr)])]));
    for (const q of ['p50', 'p99']) {
      d.add(row([`stat ${q}, warm`, us(lk('fuse', q)), us(lk('ext4', q)), `×${(lk('fuse', q) / lk('ext4', q)).toFixed(2)}`,
        ...kcells(() => [us(kl('unionblob', q)), us(kl('ext4', q)), `×${(kl('unionblob', q) / kl('ext4', q)).toFixed(2)}`])]));
    }
    d.lose('> 2 TB image: cold stat + open + reads at the ends, FUSE vs ext4', rt, 'each cold open is a LOOKUP and an OPEN round trip to the server, which opens the object below');
    if (kr) d.lose('> 2 TB image: cold stat + open + reads at the ends, unionblob.ko vs ext4 (guest)', kr, 'each cold open also opens the object in the store (a second lookup and inode read on ext4) and reads the blob\'s inode first');
  }
}

/** The guest's setting, for the scale section's introduction. */
function guestLine(k) {
  const i = k?.info ?? {};
  return `Debian's Linux ${i.kernel ?? '?'} under qemu TCG (${i.cpus ?? '?'} vCPUs, ${i['mem-kB'] ? Math.round(i['mem-kB'] / 1024) : '?'} MiB), one guest for the whole series ` +
    '(bench/scale/kernel.sh, bench/scale/guest.sh): per size, the native ext4 above and a second ext4 holding blob and store are NVMe disks; ' +
    'mount(2) of each after drop_caches (the blob disk stays mounted), then the same random paths cold and warm on both, ext4 first in every round. ' +
    'Under TCG every guest time is several times the native one: the ratios against the guest\'s ext4 are what count.';
}

/** Mount time cells of the guest: unionblob.ko, ext4, their paired ratio. */
function mountCells(m) {
  const u = summarize(m.unionblob), e = summarize(m.ext4), r = pairedRatio(m.unionblob, m.ext4);
  return { r, cells: [`${secs(u.median)} ${pct(u.spread)}`, `${secs(e.median)} ${pct(e.spread)}`, ratio(r)] };
}

/**
 * Lookup p50/p99 cold and warm of `cfg` against ext4 per size; get(p) gives a point's
 * {cold, warm: {cfg: [lookup line]}}; p50 ratios above the loss line are listed with why[w].
 */
function lookupTable(d, pts, get, cfg, [name, ext4Name], versus, why) {
  const cols = [];
  for (const w of ['cold', 'warm']) for (const q of ['p50', 'p99']) cols.push(`${w} ${q} ${name}`, `${w} ${q} ${ext4Name}`, '×');
  d.add(...head(['files', ...cols]));
  for (const p of pts) {
    const cells = [];
    for (const w of ['cold', 'warm']) {
      for (const q of ['p50', 'p99']) {
        const f = get(p)[w][cfg].map((x) => x[`${q}_ns`]), e = get(p)[w].ext4.map((x) => x[`${q}_ns`]);
        const r = pairedRatio(f, e);
        cells.push(us(summarize(f).median), us(summarize(e).median), ratio(r));
        if (q === 'p50') d.lose(`scale ${int(p.files)} files: ${w} lookup p50, ${versus}`, r, why[w]);
      }
    }
    d.add(row([int(p.files), ...cells]));
  }
}

/** What the scale series left out, for "What this does not cover". */
function scaleCoverage(s) {
  const kpts = (s?.points ?? []).filter((p) => p.kernel?.lookup);
  if (!kpts.length) return '- The scale series runs on FUSE only here; the module is measured on the 20,000-100,000-file images of the kernel suite.';
  const top = kpts[kpts.length - 1].files;
  const hostTop = Math.max(...s.points.map((p) => p.files));
  const not1e7 = hostTop < 1e7 ? ' 10,000,000 files were not run this time, on the host or in the guest.' : '';
  return `- The module's scale series stops at ${int(top)} files${hostTop > top ? ` (the host's goes to ${int(hostTop)})` : ''} and measures mount and lookups only ` +
    '(no walks, opens or reads of the lean files, no memory): the kernel suite has those, on 20,000-100,000 files. The lean files are inline, so the store is nearly empty; ' +
    `the guest runs under TCG, so its absolute times are several times native.${not1e7}`;
}

/** A few headline figures, each with where it comes from (the tables below have the rest). */
function summary(data) {
  const out = [];
  const k = data.suites.kernel?.data?.images ?? {};
  const kr = (img, row, cfg = 'unionblob') => k[img]?.[row]?.cfgs?.[cfg];
  const x = (v) => (v && Number.isFinite(v.ratio) ? ratio({ median: v.ratio, spread: v.ratioSpread }) : '–');
  if (k.ab) out.push(`- **Sharing**: after reading every file of two images that share a base layer, the page cache holds ${x(kr('ab', 'share'))} of what two unpacked copies on ext4 take (overlayfs over shared layer directories: ${x(kr('ab', 'share', 'overlay'))}; erofs images: ${x(kr('ab', 'share', 'erofs'))}).`);
  if (k.a || k.s) {
    out.push(`- **Metadata** (module): cold stat walk ${x(kr('a', 'walk-cold'))} (image a) / ${x(kr('s', 'walk-cold'))} (synthetic) of ext4's time, warm ${x(kr('a', 'walk-warm'))} / ${x(kr('s', 'walk-warm'))}; slab after a walk ${x(kr('a', 'mem-walk-slab'))} / ${x(kr('s', 'mem-walk-slab'))}.`);
    out.push(`- **Opening files** (module) is where it loses: open+close of every file ${x(kr('a', 'open-warm'))} / ${x(kr('s', 'open-warm'))}; open+read warm ${x(kr('a', 'read-warm'))} / ${x(kr('s', 'read-warm'))}; sequential and random reads of one big file: ${x(kr('s', 'seq-warm'))} warm, ${x(kr('s', 'rand-cold'))} random cold.`);
  }
  const h = data.suites.host?.data?.images ?? {};
  const hr = (img, row, cfg) => h[img]?.[row]?.cfgs?.[cfg];
  if (h.a || h.s) {
    const both = (row, cfg) => `${x(hr('a', row, cfg))} / ${x(hr('s', row, cfg))}`;
    out.push(`- **FUSE** (host, the kernel suite's workloads; image a / synthetic, of ext4's time): unionblob-fuse cold stat walk ${both('walk-cold', 'fuse')} (mergerfs ${both('walk-cold', 'mergerfs')}), ` +
      `warm ${both('walk-warm', 'fuse')} (mergerfs ${both('walk-warm', 'mergerfs')}); open+read warm ${both('read-warm', 'fuse')} (cache=shared ${both('read-warm', 'fuse-shared')}, mergerfs ${both('read-warm', 'mergerfs')}); ` +
      `cold ${both('read-cold', 'fuse')} (mergerfs ${both('read-cold', 'mergerfs')}); mount ${both('mount-cold', 'fuse')} of ext4's cold mount(2) (mergerfs ${both('mount-cold', 'mergerfs')}).`);
  }
  const pts = data.suites.scale?.data?.points ?? [];
  if (pts.length) {
    const bpi = pts.map((p) => p.bytesPerInode.toFixed(0));
    const mnt = pts.map((p) => secs(p.stats.mount.fuse.median));
    out.push(`- **Scale** (FUSE, ${pts.map((p) => int(p.files)).join(' / ')} files): blob ${bpi.join(' / ')} bytes per inode, FUSE mount ${mnt.join(' / ')}; at ${int(pts[pts.length - 1].files)} files the FUSE mount takes ×${(pts[pts.length - 1].stats.mount.fuse.median / pts[0].stats.mount.fuse.median).toFixed(2)} of its time at ${int(pts[0].files)}, and a warm lookup's p50 ×${(summarize(pts[pts.length - 1].lookup.warm.fuse.map((q) => q.p50_ns)).median / summarize(pts[0].lookup.warm.fuse.map((q) => q.p50_ns)).median).toFixed(2)} (plots below).`);
  }
  const kpts = pts.filter((p) => p.kernel?.lookup);
  if (kpts.length) {
    const lr = (p, w) => ratio(pairedRatio(p.kernel.lookup[w].unionblob.map((q) => q.p50_ns), p.kernel.lookup[w].ext4.map((q) => q.p50_ns)));
    out.push(`- **Scale, module** (guest, ${kpts.map((p) => int(p.files)).join(' / ')} files): mount(2) ${kpts.map((p) => mountCells(p.kernel.mount).cells[2]).join(' / ')} of the guest's ext4 mount; ` +
      `lookup p50 cold ${kpts.map((p) => lr(p, 'cold')).join(' / ')}, warm ${kpts.map((p) => lr(p, 'warm')).join(' / ')} of ext4's (same tree, same guest).`);
  }
  const sp = data.suites.scale?.data?.sparse;
  if (sp) {
    const k = sp.kernel;
    out.push(`- **${(sp.apparentBytes / 1e12).toFixed(2)} TB image** of sparse objects: blob ${int(sp.blobBytes)} bytes, mounted through FUSE in ${secs(sp.stats.mount.median)}` +
      (k ? ` and through the module (guest) in ${secs(summarize(k.mount.unionblob).median)}` : '') +
      `; reads at the last block of every file ${k?.readBackWrong?.length ? `**wrong through the module (${k.readBackWrong.length})**` : 'correct'}${k ? ' (FUSE and module)' : ''}.`);
  }
  out.push('', 'Absolute times and single ratios move a lot between runs on this shared machine (see the ± columns); a ratio whose spread is larger than its distance from 1 says nothing either way.');
  return out;
}

// ---- the document -------------------------------------------------------------------------

const SECTIONS = { kernel: kernelSection, host: hostSection, fuse: fuseSection, build: buildSection, scale: scaleSection };

function loadLine(name, r) {
  const l = r.load;
  return row([name, r.mode, r.date.replace('T', ' ').slice(0, 16), r.error ? `**failed: ${r.error}**` : 'ok', `${(l.wall / 60).toFixed(1)} min`,
    l.loadBefore.split(' ').slice(0, 3).join(' '), l.loadAfter.split(' ').slice(0, 3).join(' '),
    // a suite run on its own (not through bench/run.mjs) has load averages but no CPU split
    l.othersCores?.toFixed(2) ?? '–', l.oursCores?.toFixed(2) ?? '–']);
}

/**
 * The hardening results (issue #6), from docs/hardening.md where they are measured and explained:
 * the long fuzz run's table and the kernel's mutated-blob table, copied as they are, with a link.
 */
function hardeningSection(d, docsDir) {
  const file = path.join(docsDir, 'hardening.md');
  if (!fs.existsSync(file)) return;
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const table = (firstCell) => {
    const at = lines.findIndex((l) => l.startsWith(`| ${firstCell} |`));
    if (at < 0) return [];
    const end = lines.findIndex((l, i) => i > at && !l.startsWith('|'));
    return lines.slice(at, end < 0 ? lines.length : end);
  };
  d.add('', '## Hardening', '');
  d.add('Measured and explained in [hardening.md](hardening.md) (not rerun by this command: CI runs each part for a bounded time). ' +
    'The long libFuzzer run (ASan + UBSan) of the C reader\'s two targets:', '');
  d.add(...table('target'));
  d.add('', '1,000 mutated blobs mounted and walked in the qemu guest per kernel version (dmesg clean, module unloaded after):', '');
  d.add(...table('kernel'));
  d.add('', 'Also there: fast-check property tests of the TypeScript codec (round trip; mutations rejected with a one-line error or decoded to a valid tree) ' +
    'and the hostile image corpus (path traversal, hardlink and symlink tricks, huge directories and depth, tar bombs, lying manifests and digests) with each outcome.');
}

export function writeReport(data, docsDir) {
  const plotsDir = path.join(docsDir, 'plots');
  fs.mkdirSync(plotsDir, { recursive: true });
  for (const f of fs.readdirSync(plotsDir)) if (f.endsWith('.svg')) fs.rmSync(path.join(plotsDir, f));
  const d = doc(plotsDir);
  const m = data.machine;
  const modes = [...new Set(Object.values(data.suites).map((r) => r.mode))];
  d.add('# Evaluation', '');
  d.add(`Generated by \`npm run bench -- --suite ${modes.join('/')}\` (bench/run.mjs) on ${m.date.replace('T', ' ').slice(0, 16)} UTC at commit ${m.commit}. ` +
    'Every figure is a ratio against the native limit (the unpacked tree on ext4) measured in the same run, with the spread of the repeated runs ' +
    '(±: the largest deviation of one run from the median). Raw figures: [evaluation.json](evaluation.json).');
  d.add('', '## Machine', '');
  d.add(...head(['', '']));
  for (const [k, v] of [['CPU', m.cpu], ['cores', m.cores], ['RAM', `${m.ramGiB} GiB`], ['host kernel', m.hostKernel], ['guest kernel', data.suites.kernel?.data?.info?.kernel ?? '–'],
    ['node', m.node], ['qemu', m.qemu], ['mergerfs', m.mergerfs], ['erofs-utils', m.erofsUtils], ['libfuse', m.libfuse], ['e2fsprogs', m.e2fsprogs]]) d.add(row([k, String(v)]));
  d.add('', 'The machine is a 2-core VM shared with other engineers\' builds, tests and guests while this ran: absolute times are noisy, ' +
    'the kernel runs are under TCG emulation (no KVM; several times slower than native), and only same-run ratios are meaningful. ' +
    'Load per suite (others\' cores: machine-wide busy CPU minus our suite\'s own, averaged over its run):', '');
  d.add(...head(['suite', 'mode', 'finished (UTC)', 'status', 'took', 'loadavg before', 'loadavg after', 'others\' cores', 'our cores']));
  for (const [n, r] of Object.entries(data.suites)) d.add(loadLine(n, r));
  if (data.kept?.length) d.add('', `Kept from an earlier run (not rerun this time): ${data.kept.join(', ')}.`);
  d.add('', 'Commands:', '');
  for (const [n, r] of Object.entries(data.suites)) d.add(`- ${n}: \`${Object.entries(r.env ?? {}).map(([k, v]) => `${k}=${v} `).join('')}${r.command.replace(/\S*\/node /, 'node ').replace(/\S*\/(bench\/)/g, '$1')}\``);
  const body = doc(plotsDir);
  for (const [n, r] of Object.entries(data.suites)) {
    if (r.data) SECTIONS[n](body, r);
    else body.add('', `## ${n}`, '', `**Did not produce figures: ${r.error}.**`);
  }
  d.add('', '## Summary', '', ...summary(data));
  d.add('', '## Where we lose, and why', '');
  d.add(`Every row where unionblob (the module, the FUSE server, the compiler) takes more than ×${LOSS} of the native limit in this run:`, '');
  if (!body.losses.length) d.add('- nowhere in this run.');
  for (const l of body.losses) d.add(`- **${l.where}: ${ratio(l.r)}**${l.why ? `: ${l.why}.` : '.'}`);
  d.lines.push(...body.lines);
  hardeningSection(d, docsDir);
  const quick = Object.entries(data.suites).filter(([, r]) => r.mode === 'quick').map(([n]) => n);
  d.add('', '## What this does not cover', '');
  if (quick.length) d.add(`- Suites run in quick mode here (smaller images, fewer repetitions; see the commands above): ${quick.join(', ')}.`);
  d.add(
    scaleCoverage(data.suites.scale?.data),
    '- Guest "cold" reads come from disk images in the host\'s page cache: emulated NVMe at memory speed, which understates cold costs on real flash for every config alike.',
    '- Memory rows are Slab / MemAvailable deltas in an otherwise idle guest: page-granular and noisy at the kB scale.');
  if (data.suites.host) d.add('- The host suite\'s MemAvailable and Slab deltas move with everything else the shared machine allocates meanwhile (they can come out negative): read the FUSE servers\' resident-memory rows for their own cost. Its cold runs drop the whole machine\'s caches, and its disks are loop devices over files on the host\'s disk.');
  fs.writeFileSync(path.join(docsDir, 'evaluation.md'), d.lines.join('\n') + '\n');
  return { losses: body.losses, plots: body.plots };
}
