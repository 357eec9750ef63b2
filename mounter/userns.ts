// A user namespace that holds a uid/gid mapping, for idmapped mounts (mount_setattr's
// MOUNT_ATTR_IDMAP takes the mapping from a user namespace's fd). Node cannot unshare its own
// (multithreaded) process: a child, util-linux's `unshare --user`, creates the namespace; we
// write its maps from outside (root in the initial namespace may), open /proc/PID/ns/user,
// and end the child: the open fd keeps the namespace alive for as long as it is needed.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readlinkSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { IdRange } from './mount.js';

/** uid_map/gid_map text: one "FIRST MAPPED COUNT" line per range (the image's ids are the namespace's). */
function mapText(ranges: IdRange[]): string {
  return ranges.map((r) => `${r.inside} ${r.outside} ${r.count}\n`).join('');
}

/** Runs fn with an fd of a new user namespace mapping `uid` and `gid`; the fd is closed after. */
export async function withUserNamespace<T>(uid: IdRange[], gid: IdRange[], fn: (usernsFd: number) => T | Promise<T>): Promise<T> {
  const child = spawn('unshare', ['--user', 'sleep', '600'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let fd = -1;
  try {
    const pid = child.pid;
    if (pid === undefined) throw new Error('cannot start unshare(1) (util-linux) for a user namespace');
    const own = readlinkSync('/proc/self/ns/user');
    // until the child has unshared (its exec of sleep comes after)
    for (let i = 0; ; i++) {
      let ns: string | null = null;
      try {
        ns = readlinkSync(`/proc/${pid}/ns/user`);
      } catch { /* not there yet, or gone */ }
      if (ns !== null && ns !== own) break;
      if (child.exitCode !== null || i === 500) throw new Error(`unshare --user did not create a user namespace (${child.exitCode ?? 'timeout'})`);
      await sleep(2);
    }
    writeFileSync(`/proc/${pid}/uid_map`, mapText(uid));
    writeFileSync(`/proc/${pid}/gid_map`, mapText(gid));
    fd = openSync(`/proc/${pid}/ns/user`, 'r');
    return await fn(fd);
  } finally {
    if (fd >= 0) closeSync(fd);
    child.kill('SIGKILL');
    await exited;
  }
}
