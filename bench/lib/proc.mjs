// Running and timing child processes for the bench suites, and the machine's load while they
// run (the development VM is shared, so every report says how busy the others were).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Run a command; throws with its stderr on failure unless `ok` accepts the status. */
export function sh(cmd, args, { ok = (s) => s === 0, input, cwd, env } = {}) {
  const r = spawnSync(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], input, cwd, env, encoding: 'utf8', maxBuffer: 1 << 28 });
  if (!ok(r.status)) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${(r.stderr || String(r.error ?? '')).trim().split('\n').slice(-3).join(' | ')}`);
  return r;
}

/** Wall seconds of fn(). */
export function seconds(fn) {
  const t0 = process.hrtime.bigint();
  const v = fn();
  return { s: Number(process.hrtime.bigint() - t0) / 1e9, v };
}

export function dropCaches() {
  spawnSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** Run under GNU time: wall seconds, peak RSS (MiB), user+sys CPU seconds, stdout. */
export function timed(cmd, args, opts = {}) {
  const tf = path.join(os.tmpdir(), `ub-bench-time-${process.pid}`);
  const { s, v: r } = seconds(() => sh('/usr/bin/time', ['-f', '%M %U %S', '-o', tf, cmd, ...args], opts));
  const [kib, user, sys] = fs.readFileSync(tf, 'utf8').trim().split('\n').pop().split(' ').map(Number);
  fs.rmSync(tf, { force: true });
  return { wall: s, rssMiB: kib / 1024, cpu: user + sys, stdout: r.stdout };
}

/** Machine-wide busy CPU seconds and our own children's CPU seconds so far. */
export function cpuSample() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  // /proc/self/stat: utime stime cutime cstime are fields 14..17 (after the "(comm)" field)
  const self = fs.readFileSync('/proc/self/stat', 'utf8');
  const tail = self.slice(self.lastIndexOf(')') + 2).split(' ').map(Number);
  const ours = (tail[11] + tail[12] + tail[13] + tail[14]) / 100;
  return { busy: (user + nice + system + irq + softirq + (steal || 0)) / 100, ours, t: Date.now() / 1000, load: fs.readFileSync('/proc/loadavg', 'utf8').trim() };
}

/** Between two samples: cores used by other processes on average, and the load averages. */
export function loadBetween(a, b) {
  const wall = b.t - a.t;
  return {
    wall,
    othersCores: wall > 0 ? Math.max(0, (b.busy - a.busy - (b.ours - a.ours)) / wall) : 0,
    oursCores: wall > 0 ? (b.ours - a.ours) / wall : 0,
    loadBefore: a.load,
    loadAfter: b.load,
  };
}

/** --name VALUE from argv, or the fallback. */
export function argOf(argv, name, fallback) {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
}
