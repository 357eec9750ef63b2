// bench/kernel and bench/host: turns the UBB lines of bench/kernel/guest-bench.sh into tables
// (median, spread, ratio to ext4 of the same run) and checks the targets of issue #3. Run by
// bench/kernel/run.sh (the guest) and bench/host/run.sh (the host); the configs are those the
// run names in its "UBB info cfgs=" line (the guest's four when it names none).
//
//   node bench/kernel/report.mjs RAW.log [--host TEXT] [--date TEXT] [--elapsed S] [--write RESULTS.md]
//                                        [--json FILE]
//
// --write replaces what lies between "<!-- bench:begin -->" and "<!-- bench:end -->" in that file.
// --json writes every row as {images: {IMG: {ROW: {label, unit, cfgs: {CFG: {median, spread, n,
// ratio, ratioSpread}}}}}, info, errors} for bench/run.mjs (ratios are to ext4, per round).
import { readFileSync, writeFileSync } from 'node:fs';

const argv = process.argv.slice(2);
const opt = (name) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
const raw = argv[0];
if (!raw) { console.error('usage: node bench/kernel/report.mjs RAW.log [--write FILE]'); process.exit(2); }

const CFG_LABEL = {
  ext4: 'ext4 (unpacked)', erofs: 'erofs', overlay: 'overlayfs', unionblob: 'unionblob',
  fuse: 'unionblob-fuse', 'fuse-shared': 'unionblob-fuse cache=shared', mergerfs: 'mergerfs',
};
// [row id, label, unit, test, field]: test and field default to the row id and "us".
const TESTS = [
  ['mount-cold', 'mount, cold caches', 'ms'],
  ['mount-warm', 'mount, warm', 'ms'],
  ['mem-mount', 'memory used after mount(2) (MemAvailable drop)', 'kB', 'mem', 'mount-used-kB'],
  ['mem-walk', 'memory used after mount + stat walk (MemAvailable drop)', 'kB', 'mem', 'walk-used-kB'],
  ['mem-walk-slab', 'slab growth after mount + stat walk', 'kB', 'mem', 'walk-slab-kB'],
  // FUSE configs only (host): the server process, already part of the MemAvailable drops
  ['mem-rss-mount', 'FUSE server resident memory after mount', 'kB', 'mem', 'mount-rss-kB'],
  ['mem-rss-walk', 'FUSE server resident memory after mount + stat walk', 'kB', 'mem', 'walk-rss-kB'],
  ['walk-cold', 'stat walk, cold', 's'],
  ['walk-warm', 'stat walk, warm', 's'],
  ['read-warm', 'open+read every file, warm', 's'],
  ['open-warm', 'open+close every file (no read), warm', 's'],
  ['read-cold', 'open+read every file, cold', 's'],
  ['seq-cold', 'sequential read of the big file, cold', 's'],
  ['seq-warm', 'sequential read of the big file, warm', 's'],
  ['rand-cold', 'random 4 KiB reads in the big file, cold', 's'],
  ['rand-warm', 'random 4 KiB reads in the big file, warm (10x as many)', 's'],
  ['par-1', 'open+read every file, 1 thread, warm', 's'],
  ['par-2', 'open+read every file, 2 threads, warm', 's'],
  ['par-4', 'open+read every file, 4 threads, warm', 's'],
  ['share', 'page cache after reading every file of a, then of b', 'kB', 'share', 'cached-kB'],
  ['share-a', 'page cache after reading every file of a alone', 'kB', 'share', 'cached-a-kB'],
];
// issue #3: unionblob within 1.2x of ext4 on warm walks and reads; mount < 50 ms.
const TARGETS = {
  'walk-warm': { ratio: 1.2 },
  'read-warm': { ratio: 1.2 },
  'mount-cold': { ms: 50 },
  'mount-warm': { ms: 50 },
};
const IMAGE_LABEL = { a: 'Debian image `a`', s: 'synthetic image', ab: 'Debian images `a` and `b` (b = a\'s base layer + one layer)' };

const info = {};
const errors = [];
const runs = new Map(); // img/test/cfg -> [{us, ...}]
for (const line of readFileSync(raw, 'utf8').split('\n')) {
  if (!line.startsWith('UBB ')) continue;
  const rest = line.slice(4);
  if (rest.startsWith('info ')) {
    for (const kv of rest.slice(5).split(' ')) { const [k, v] = kv.split('='); if (v !== undefined) info[k] = v; }
    continue;
  }
  if (rest.startsWith('error ') || rest.startsWith('dmesg ')) { errors.push(rest); continue; }
  if (!rest.startsWith('img=')) continue;
  const r = Object.fromEntries(rest.split(' ').map((kv) => kv.split('=')));
  const key = `${r.img}/${r.test}/${r.cfg}`;
  if (!runs.has(key)) runs.set(key, []);
  runs.get(key).push(r);
}

const CFGS = (info.cfgs ?? 'ext4,erofs,overlay,unionblob').split(',');
const host = info.where === 'host';

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
function stats(img, test, cfg, field = 'us') {
  const rs = runs.get(`${img}/${test}/${cfg}`)?.filter((r) => r[field] !== undefined);
  if (!rs || !rs.length) return null;
  const us = rs.map((r) => Number(r[field]));
  const med = median(us);
  const spread = med ? Math.max(Math.max(...us) - med, med - Math.min(...us)) / Math.abs(med) : 0;
  return { med, spread, n: us.length, rs, field };
}
// The ratio to ext4: the median, over the rounds, of this config's time over ext4's time in
// the same round (measured seconds apart), which cancels slow drifts of a shared host; the
// ratio of the medians where rounds do not pair up.
function roundRatios(s, base) {
  const ext = new Map(base.rs.map((r) => [r.rep, Number(r[base.field])]));
  const rs = s.rs.filter((r) => ext.get(r.rep) > 0).map((r) => Number(r[s.field]) / ext.get(r.rep));
  return rs.length === s.rs.length && rs.length ? rs : null;
}
function pairedRatio(s, base) {
  const rs = roundRatios(s, base);
  return rs ? median(rs) : s.med / base.med;
}
/** Spread of the per-round ratios: the largest deviation of one from their median. */
function ratioSpread(s, base) {
  const rs = roundRatios(s, base);
  if (!rs) return null;
  const m = median(rs);
  return Math.max(...rs.map((r) => Math.abs(r - m))) / m;
}
function fmt(us, unit) {
  if (unit === 'kB') return us >= 10240 ? `${(us / 1024).toFixed(0)} MiB` : `${Math.round(us)} kB`;
  if (unit === 'ms') { const ms = us / 1000; return `${ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)} ms`; }
  const s = us / 1e6;
  return `${s < 1 ? s.toFixed(3) : s < 10 ? s.toFixed(2) : s.toFixed(1)} s`;
}

/** "a-mount 12, a-mem 8, ..." from the guest's t-PHASE=UPTIME marks, or null without them. */
function phaseTimes(inf) {
  const marks = Object.entries(inf).filter(([k]) => k.startsWith('t-')).map(([k, v]) => [k.slice(2), Number(v)])
    .sort((x, y) => x[1] - y[1]);
  if (marks.length < 2) return null;
  const parts = marks.slice(0, -1).map(([name, t], i) => `${name} ${Math.round(marks[i + 1][1] - t)}`);
  return `${parts.join(', ')}; in all ${Math.round(marks.at(-1)[1] - marks[0][1])}`;
}

const images = [...new Set([...runs.keys()].map((k) => k.split('/')[0]))];
const out = [];
if (host) {
  out.push(`Run on the host: Linux ${info.kernel ?? '?'}, ${info.cpus ?? '?'} CPUs, ` +
    `${Math.round(Number(info['mem-kB'] ?? 0) / 1024)} MiB; disks on read-only loop devices; mergerfs ${info.mergerfs ?? '?'}; ` +
    `${info.reps ?? '?'} repetitions per figure.`);
  if (opt('host')) out.push(`Machine: ${opt('host')}.`);
} else {
  out.push(`Guest: Linux ${info.kernel ?? '?'} (Debian), qemu TCG, ${info.cpus ?? '?'} vCPUs, ` +
    `${Math.round(Number(info['mem-kB'] ?? 0) / 1024)} MiB; erofs ${info.erofs ?? '?'}; ` +
    `${info.reps ?? '?'} repetitions per figure.`);
  if (opt('host')) out.push(`Host: ${opt('host')}.`);
}
if (opt('date')) out.push(`Date: ${opt('date')}${opt('elapsed') ? `; whole run ${Math.round(Number(opt('elapsed')) / 60)} min` : ''}.`);
const phases = phaseTimes(info);
if (phases) out.push(`Time per phase (s, from the workload script's marks; warm-ups, cache drops and mounts included): ${phases}.`);
out.push('');
out.push('Each cell: median of the repetitions, ±the largest deviation of one from it, and the ratio to ' +
  'ext4 (lower is better): the median over the rounds of config time / ext4 time in the same round.');

const misses = [];
const json = { info, errors, images: {} };
for (const img of images) {
  const w = stats(img, 'walk-warm', 'ext4') ?? stats(img, 'walk-cold', 'ext4');
  const rd = stats(img, 'read-warm', 'ext4');
  out.push('');
  out.push(`### ${IMAGE_LABEL[img] ?? img}` +
    (w ? `: ${Number(w.rs[0].entries).toLocaleString('en-US')} entries` : '') +
    (rd ? `, ${Number(rd.rs[0].files).toLocaleString('en-US')} regular files, ${(Number(rd.rs[0].bytes) / 1e6).toFixed(0)} MB` : ''));
  out.push('');
  // the targets are issue #3's, for the module: no column where it is not measured
  const withTargets = CFGS.includes('unionblob');
  out.push(`| | ${CFGS.map((c) => CFG_LABEL[c] ?? c).join(' | ')} |${withTargets ? ' target (unionblob) |' : ''}`);
  out.push(`|---|${CFGS.map(() => '---:').join('|')}|${withTargets ? '---|' : ''}`);
  for (const [row, label, unit, test = row, field = 'us'] of TESTS) {
    // a row only some configs measure (the FUSE servers' memory) has no ext4 base: no ratios
    const base = stats(img, test, 'ext4', field);
    if (!CFGS.some((cfg) => stats(img, test, cfg, field))) continue;
    const rowJson = { label, unit, cfgs: {} };
    ((json.images[img] ??= {})[row] = rowJson);
    const cells = CFGS.map((cfg) => {
      const s = stats(img, test, cfg, field);
      if (!s) return '–';
      const ok = base?.med > 0;
      rowJson.cfgs[cfg] = { median: s.med, spread: s.spread, n: s.n, values: s.rs.map((r) => Number(r[field])),
        ratio: ok ? pairedRatio(s, base) : null, ratioSpread: ok ? ratioSpread(s, base) : null };
      const ratio = cfg === 'ext4' || !ok ? '' : ` **×${pairedRatio(s, base).toFixed(2)}**`;
      return `${fmt(s.med, unit)} ±${Math.round(s.spread * 100)}%${ratio}`;
    });
    let target = '';
    const t = TARGETS[row];
    const ub = stats(img, test, 'unionblob');
    if (t && ub && base) {
      const ok = t.ratio ? pairedRatio(ub, base) <= t.ratio : ub.med / 1000 < t.ms;
      target = `${t.ratio ? `≤ ×${t.ratio}` : `< ${t.ms} ms`}: ${ok ? 'met' : '**missed**'}`;
      if (!ok) misses.push(`${img} ${test}`);
    }
    out.push(`| ${label} | ${cells.join(' | ')} |${withTargets ? ` ${target} |` : ''}`);
  }
  // The same tree everywhere? (erofs: see RESULTS.md about 255-byte names)
  const counts = CFGS.map((cfg) => { const s = stats(img, 'walk-warm', cfg) ?? stats(img, 'walk-cold', cfg); return s ? `${cfg} ${s.rs[0].entries}` : null; }).filter(Boolean);
  const files = CFGS.map((cfg) => { const s = stats(img, 'read-warm', cfg); return s ? `${cfg} ${s.rs[0].files}/${s.rs[0].bytes}` : null; }).filter(Boolean);
  const errs = [...runs.entries()].filter(([k]) => k.startsWith(`${img}/`)).flatMap(([, rs]) => rs).filter((r) => r.errors && r.errors !== '0');
  if (counts.length || errs.length) {
    out.push('');
    out.push(`Entries walked: ${counts.join(', ')}. Files/bytes read: ${files.join(', ')}.` +
      (errs.length ? ` **${errs.length} measurements reported errors.**` : ''));
  }
}
out.push('');
if (CFGS.includes('unionblob')) out.push(misses.length ? `Targets missed: ${misses.join(', ')}.` : 'All targets met.');
if (errors.length) {
  out.push('');
  out.push('Guest errors:');
  for (const e of errors) out.push(`    ${e}`);
}
const text = out.join('\n') + '\n';
process.stdout.write(text);

if (opt('json')) writeFileSync(opt('json'), JSON.stringify(json, null, 1));

const file = opt('write');
if (file) {
  const doc = readFileSync(file, 'utf8');
  const b = '<!-- bench:begin -->', e = '<!-- bench:end -->';
  const i = doc.indexOf(b), j = doc.indexOf(e);
  if (i < 0 || j < i) { console.error(`report: no ${b} ... ${e} in ${file}`); process.exit(1); }
  writeFileSync(file, doc.slice(0, i + b.length) + '\n' + text + doc.slice(j));
}
