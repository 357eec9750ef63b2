// Differential run: node run.mjs FIRST_SEED COUNT [--transfer] [--keep-going]
// env FEAT passes through to gen.py; IMG=path.tar uses that archive instead of generating (one run).
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEnv, fetchContainerd17 } from '../../lib/containerd-env.mjs';
import { treeManifest, diffManifests } from '../../lib/treeman.mjs';

// results and generated images go to $FUZZ_DIR (default /var/tmp/ub-fuzz-ctrd); gen.py is beside this file
const HERE = path.dirname(new URL(import.meta.url).pathname);
const D = process.env.FUZZ_DIR ?? '/var/tmp/ub-fuzz-ctrd';
fs.mkdirSync(D, { recursive: true });
const first = Number(process.argv[2] ?? 1);
const count = Number(process.argv[3] ?? 1);
const transfer = process.argv.includes('--transfer');
const REMAP = !!process.env.REMAP;
const SNS = ['overlayfs', 'unionblob'];
const MAP = ['--uidmap', '0:100000:65536', '--gidmap', '0:100000:65536'];
const resFile = path.join(D, `results${transfer ? '-17' : ''}${process.env.NOAHEAD ? '-noahead' : ''}.jsonl`);

const opts = transfer ? { bin: path.join(fetchContainerd17(), 'usr', 'bin'), transfer: true } : {};
const e = await startEnv(opts);
fs.chmodSync(e.dir, 0o755);
if (process.env.NOAHEAD) {
  e.killSnapshotter('SIGTERM');
  await sleep(500);
  await e.startSnapshotter({ args: ['--no-compile-ahead'] });
}
console.log('env', e.dir);
const IGN = new Set(['.', 'dev', 'proc', 'sys', 'etc']);

async function view(sn, ref, id, extra = []) {
  await e.ctr(['run', '-d', '--fifo-dir', path.join(e.dir, 'fifo'), '--snapshotter', sn, ...extra, ref, id, '/bin/sleep', '600']);
  const rootfs = path.join(e.dir, 'state', 'io.containerd.runtime.v2.task', 'default', id, 'rootfs');
  for (let i = 0; i < 100 && !fs.existsSync(path.join(rootfs, 'bin')); i++) await sleep(100);
  const m = await treeManifest(rootfs);
  await e.ctr(['task', 'kill', '-s', 'SIGKILL', id]).catch(() => {});
  for (let i = 0; i < 50; i++) {
    if (!(await e.ctr(['task', 'ls'])).includes(id)) break;
    await e.ctr(['task', 'rm', id]).catch(() => {});
    await sleep(100);
  }
  await e.ctr(['containers', 'rm', id]);
  return m;
}

try {
  for (let seed = first; seed < first + count; seed++) {
    const name = `s${seed}`;
    const out = path.join(D, 'img', name);
    let archive = process.env.IMG;
    if (!archive) {
      fs.rmSync(out, { recursive: true, force: true });
      execFileSync('python3', [path.join(HERE, 'gen.py'), String(seed), out, name], { stdio: 'inherit' });
      archive = path.join(out, 'image.docker-archive.tar');
    }
    const ref = process.env.IMG_REF ?? `docker.io/fuzz/${name}:latest`;
    const views = {};
    const errs = {};
    for (const sn of SNS) {
      try {
        const args = ['images', 'import', ...(transfer ? ['--local=false'] : []), '--snapshotter', sn, archive];
        await e.ctr(args, { timeout: 600_000 });
        views[sn] = await view(sn, ref, `${name}-${sn}`, REMAP ? MAP : []);
      } catch (err) {
        errs[sn] = String(err.stderr || err.message).slice(0, 2000);
      }
    }
    if (REMAP && views.unionblob) {
      try {
        const v2 = await view('unionblob', ref, `${name}-ubrl`, [...MAP, '--remap-labels']);
        const d2 = diffManifests(views.unionblob, v2, { labels: ['ub-chown', 'ub-remap-labels'], ignorePaths: (p) => ['dev/', 'proc/', 'sys/'].some((x) => p.startsWith(x)) })
          .filter((l) => !(IGN.has(l.split(': ')[0]) && l.split(': ')[1] === 'mtime'));
        if (d2.length) { console.log(`seed ${seed}: ub chown copy vs --remap-labels: ${d2.length}`); for (const l of d2.slice(0, 10)) console.log('  R', l.slice(0, 300)); }
        errs.remapdiff = d2.slice(0, 40);
        if (views.overlayfs) {
          const d3 = diffManifests(views.overlayfs, v2, { labels: ['overlayfs-chown', 'ub-remap-labels'], ignorePaths: (p) => ['dev/', 'proc/', 'sys/'].some((x) => p.startsWith(x)) })
            .filter((l) => !(IGN.has(l.split(': ')[0]) && l.split(': ')[1] === 'mtime'));
          errs.remapdiff3 = d3.slice(0, 40);
          if (d3.length) { console.log(`seed ${seed}: overlayfs chown vs ub --remap-labels: ${d3.length}`); for (const l of d3.slice(0, 10)) console.log('  R3', l.slice(0, 300)); }
        }
      } catch (err) {
        errs.remap = String(err.stderr || err.message).slice(0, 2000);
      }
    }
    let diffs = [];
    if (views.overlayfs && views.unionblob) {
      diffs = diffManifests(views.overlayfs, views.unionblob, {
        labels: ['overlayfs', 'unionblob'],
        ignorePaths: (p) => ['dev/', 'proc/', 'sys/'].some((x) => p.startsWith(x)),
      }).filter((l) => !(IGN.has(l.split(': ')[0]) && l.split(': ')[1] === 'mtime'));
    }
    // third opinion: umoci (only where the two differ)
    const cls = { ub_alone: [], ctrd_alone: [], other: [] };
    const strip = (m) => { for (const e of m.entries.values()) e.xattrs = Object.fromEntries(Object.entries(e.xattrs).filter(([k, v]) => !k.startsWith('trusted.') && v !== '')); return m; };
    if (views.unionblob && !views.overlayfs) views.overlayfs = { entries: new Map() };
    if ((diffs.length || errs.overlayfs) && views.unionblob && fs.existsSync(path.join(out, 'oci'))) {
      const b = path.join(out, 'bundle');
      fs.rmSync(b, { recursive: true, force: true });
      execFileSync('umoci', ['unpack', '--image', path.join(out, 'oci') + ':latest', b], { stdio: 'ignore' });
      const M = strip(await treeManifest(path.join(b, 'rootfs'))); strip(views.overlayfs); strip(views.unionblob);
      fs.rmSync(b, { recursive: true, force: true });
      const key = (m, p, f) => { const x = m.entries.get(p); return x === undefined ? '(absent)' : f === 'xattrs' ? JSON.stringify(x.xattrs) : String(x[f]); };
      const paths = new Set([...views.overlayfs.entries.keys(), ...views.unionblob.entries.keys()]);
      for (const p of [...paths].sort()) {
        if (['dev', 'proc', 'sys', '.', 'etc', 'run'].some((x) => p === x || p.startsWith(x + '/'))) continue;
        for (const f of ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'rdev', 'xattrs', 'hardlinks', 'mtime']) {
          const o = key(views.overlayfs, p, f), u = key(views.unionblob, p, f), m = key(M, p, f);
          if (o === u) continue;
          const line = `${JSON.stringify(p).slice(0, 160)} ${f}: ctrd=${o.slice(0, 80)} ub=${u.slice(0, 80)} umoci=${m.slice(0, 80)}`;
          if (u === m) cls.ctrd_alone.push(line); else if (o === m) cls.ub_alone.push(line); else cls.other.push(line);
          if (o === '(absent)' || u === '(absent)') break;
        }
      }
      console.log(`  ub_alone=${cls.ub_alone.length} ctrd_alone=${cls.ctrd_alone.length} other=${cls.other.length}`);
      for (const l of [...cls.ub_alone, ...cls.other].slice(0, 20)) console.log('  !', l);
    }
    const rec = { seed, cls, feat: process.env.FEAT ?? '', transfer, errs, ndiff: diffs.length, diffs: diffs.slice(0, 60) };
    fs.appendFileSync(resFile, JSON.stringify(rec) + '\n');
    console.log(`seed ${seed}: ${Object.keys(errs).length ? 'ERR ' + JSON.stringify(errs).slice(0, 600) : ''} diffs=${diffs.length}`);
    await e.ctr(['images', 'rm', ref]).catch(() => {});
    if (!process.env.KEEP_IMG && !process.env.IMG && diffs.length === 0 && !Object.keys(errs).length) fs.rmSync(out, { recursive: true, force: true });
  }
  const log = e.log();
  console.log('fast path layers:', (log.match(/fast path: sha256:\S+ \(id \d+\) compiled from/g) ?? []).length, 'compiled ahead:', (log.match(/compiled ahead from sha256:/g) ?? []).length, 'slow/upper:', (log.match(/upper entries/g) ?? []).length);
  const bad = log.split('\n').filter((l) => /error|panic|fail/i.test(l));
  if (bad.length) console.log('snapshotter log errors:\n' + bad.slice(-20).join('\n'));
} finally {
  if (!process.env.KEEP) await e.stop();
}
