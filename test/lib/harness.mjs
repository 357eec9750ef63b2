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
