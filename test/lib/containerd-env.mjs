// A private containerd (1.6 from bookworm, or the 1.7 unpacked by test/fixtures/fetch-containerd.sh)
// with the unionblob snapshotter as a proxy plugin, everything under one temp directory, and a
// stop() that leaves nothing behind: tasks, shims, FUSE servers, mounts, files.
import { execFile, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);
export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const CFS = path.join(REPO, 'bin', 'cfs');

export function fetchContainerd17() {
  const r = spawnSync('bash', [path.join(REPO, 'test/fixtures/fetch-containerd.sh'), 'trixie'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`fetch-containerd.sh failed: ${r.stderr}`);
  return r.stdout.trim();
}

function config(dir, { transfer }) {
  let c = `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "${dir}/containerd.sock"
[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"
[proxy_plugins.unionblob]
  type = "snapshot"
  address = "${dir}/ub.sock"
  capabilities = ["remap-ids"]
`;
  if (transfer) {
    // The transfer service unpacks only for the snapshotters listed here: both, so that the
    // benchmark can run the same `ctr images import --local=false` for overlayfs and unionblob.
    c += `[plugins."io.containerd.transfer.v1.local"]\n`;
    for (const sn of ['unionblob', 'overlayfs']) {
      c += `  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "${sn}"
`;
    }
  }
  return c;
}

function pidsWithCmdline(pattern) {
  const out = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'latin1');
      if (cmd.includes(pattern)) out.push(Number(p));
    } catch { /* gone */ }
  }
  return out;
}

export function mountsUnder(dir) {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean)
    .map((l) => l.split(' ')[4].replace(/\\040/g, ' '))
    .filter((m) => m === dir || m.startsWith(dir + '/'));
}

async function waitFor(what, fn, ms = 20_000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      if (await fn()) return;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * @param {{ bin?: string, transfer?: boolean, storeDir?: string, containerdRoot?: boolean, nodeArgs?: string[], env?: Record<string, string>, startTimeoutMs?: number }} opts
 *   bin: a usr/bin with containerd, ctr, shims; containerdRoot: the snapshotter reads layer blobs from containerd's
 *   files; nodeArgs: options for the snapshotter's node (e.g. --cpu-prof, to profile it)
 */
export async function startEnv(opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ubsn-'));
  const env = { ...process.env, ...opts.env, PATH: opts.bin ? `${opts.bin}:${process.env.PATH}` : process.env.PATH };
  fs.writeFileSync(path.join(dir, 'config.toml'), config(dir, { transfer: !!opts.transfer }));
  fs.mkdirSync(path.join(dir, 'fifo'));
  const ubRoot = path.join(dir, 'ub');
  const store = opts.storeDir ?? path.join(ubRoot, 'store');
  const logFile = path.join(dir, 'ub.log');
  const procs = { ub: null, ctd: null };
  // how long the snapshotter and containerd may take to start (the kernel tests' qemu guests are slow)
  const startMs = opts.startTimeoutMs ?? 20_000;

  const e = {
    dir, ubRoot, store, logFile,
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''),
    /** containerdRoot: pass --containerd-root (the fast path reads containerd's blob files). */
    /** args: more options for `cfs snapshotter` (e.g. --no-compile-ahead). */
    async startSnapshotter({ containerdRoot = !!opts.containerdRoot, args = [] } = {}) {
      const out = fs.openSync(logFile, 'a');
      procs.ub = spawn(process.execPath, [...(opts.nodeArgs ?? []), CFS, 'snapshotter', '--root', ubRoot, '--address', path.join(dir, 'ub.sock'),
        '--store', store, '--containerd-address', path.join(dir, 'containerd.sock'),
        ...(containerdRoot ? ['--containerd-root', path.join(dir, 'root')] : []), ...args], { stdio: ['ignore', out, out], env });
      fs.closeSync(out);
      await waitFor('the snapshotter socket', () => e.log().includes('serving containerd snapshots API'), startMs);
    },
    killSnapshotter(signal = 'SIGKILL') {
      procs.ub?.kill(signal);
      procs.ub = null;
    },
    async startContainerd() {
      const out = fs.openSync(path.join(dir, 'containerd.log'), 'a');
      procs.ctd = spawn('containerd', ['--config', path.join(dir, 'config.toml')], { stdio: ['ignore', out, out], env });
      fs.closeSync(out);
      await waitFor('containerd', async () => (await e.ctr(['version'])).includes('Server'), startMs);
    },
    async ctr(args, { timeout = 120_000 } = {}) {
      const { stdout, stderr } = await execFileP('ctr', ['-a', path.join(dir, 'containerd.sock'), ...args], { env, timeout, maxBuffer: 64 << 20 });
      return stdout + stderr;
    },
    async ctrFails(args) {
      try {
        await e.ctr(args);
      } catch (err) {
        return String(err.stderr || err.message);
      }
      throw new Error(`ctr ${args.join(' ')} succeeded, expected a failure`);
    },
    async stop() {
      // Tasks first (their shims outlive containerd otherwise), then the daemons by pid.
      const ids = (await e.ctr(['containers', 'ls', '-q']).catch(() => '')).split('\n').filter(Boolean);
      for (const id of ids) await e.ctr(['task', 'kill', '-s', 'SIGKILL', id]).catch(() => {});
      for (const id of ids) {
        await e.ctr(['task', 'rm', '-f', id]).catch(() => {});
        await e.ctr(['containers', 'rm', id]).catch(() => {});
        // runc keeps its state in /run/containerd/runc whatever containerd's config says
        spawnSync('runc', ['--root', '/run/containerd/runc/default', 'delete', '-f', id]);
      }
      procs.ctd?.kill('SIGTERM');
      procs.ub?.kill('SIGTERM');
      await sleep(300);
      procs.ctd?.kill('SIGKILL');
      procs.ub?.kill('SIGKILL');
      for (const pid of pidsWithCmdline(dir)) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      for (const m of mountsUnder(dir).sort((a, b) => b.length - a.length)) spawnSync('umount', ['-l', m]);
      for (const pid of pidsWithCmdline(dir)) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await e.startSnapshotter();
    await e.startContainerd();
  } catch (err) {
    const tail = e.log().split('\n').slice(-20).join(' | ');
    await e.stop();
    throw new Error(`${err.message} (snapshotter log: ${tail || 'empty'})`);
  }
  return e;
}
