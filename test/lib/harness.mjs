import { spawn } from 'node:child_process';

/**
 * Runs a qemu harness script (`bash SCRIPT FLAVOUR`) and collects its output. Never rejects:
 * a harness that cannot start or boot shows up in `code` and `err`, which the callers assert.
 */
export function runHarness(script, flavour, qemuTimeoutSeconds) {
  return new Promise((resolve) => {
    const child = spawn('bash', [script, flavour], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, UB_QEMU_TIMEOUT: process.env.UB_QEMU_TIMEOUT ?? String(qemuTimeoutSeconds) },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', (e) => { err += `\nspawn: ${e.message}`; });
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

/**
 * A harness's console lines -> { release, checks: [{ name, ok, reason, diag[] }] in guest
 * order, ended, diags, outDir, imagesJson }. A check reported twice keeps its worst result.
 */
export function parseHarnessOutput(out) {
  const checks = [];
  const byName = new Map();
  const diags = new Map();
  let release = '';
  let ended = false;
  let outDir = '';
  let imagesJson = '';
  for (const line of out.split('\n')) {
    let m;
    if ((m = /^UBKERNEL \S+ (\S+)/.exec(line))) release = m[1];
    else if ((m = /^UBOUT (\S+) (\S+)/.exec(line))) [outDir, imagesJson] = [m[1], m[2]];
    else if ((m = /^UBTEST (ok|fail) (\S+) ?(.*)$/.exec(line))) {
      const c = { name: m[2], ok: m[1] === 'ok', reason: m[3] };
      const prev = byName.get(c.name);
      if (prev) { if (!c.ok) Object.assign(prev, c); continue; }
      byName.set(c.name, c);
      checks.push(c);
    } else if ((m = /^UBDIAG (\S+) (.*)$/.exec(line))) {
      if (!diags.has(m[1])) diags.set(m[1], []);
      diags.get(m[1]).push(m[2]);
    } else if (line.startsWith('UBTEST end')) ended = true;
  }
  for (const c of checks) c.diag = diags.get(c.name) ?? [];
  return { release, checks, ended, diags, outDir, imagesJson };
}
