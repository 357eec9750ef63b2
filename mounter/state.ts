// Bookkeeping of `cfs mount`, so one `cfs umount TARGET` can release everything a mount made:
//
//   /run/unionblob/                     (UNIONBLOB_RUN_DIR overrides it, for tests)
//     mounts/<key>.json                 MountState of the mount at one target
//     mounts/<key>.pid                  pid of its FUSE server (written by the server itself)
//     mounts/<key>.log                  the server's runtime errors after it daemonized
//     mounts/<key>.lock                 flock(2)ed by cfs mount and umount of the target (two at
//                                       once both saw no live state and mounted twice)
//     lower/<key>/                      mountpoint of the read-only lower when an overlay is
//                                       stacked on the target (mode 0700: only the overlay,
//                                       which uses the mounter's credentials, looks inside)
//
// <key> is a hash of the target's absolute path. /run is a tmpfs on most systems, so a reboot
// forgets the state exactly when it forgets the mounts. A user other than root (rootless FUSE
// mounts) keeps the same tree in $XDG_RUNTIME_DIR/unionblob (/run/user/UID, also a tmpfs), or in
// $TMPDIR/unionblob-UID where no runtime directory is set; either must be a private directory
// of that user (another user could otherwise plant states and pid files for it to act on). So
// does root of a user namespace other than the host's (a rootless container).
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeDirs } from '../compiler/mkdirs.js';

export type Backend = 'kernel' | 'fuse';

export interface MountState {
  version: 1;
  target: string;
  blob: string;
  stores: string[];
  backend: Backend;
  /** Where the blob itself is mounted: the target, or the hidden lower under an overlay. */
  lower: string;
  upper?: string;
  work?: string;
  /** FUSE server pid (absent for the kernel backend). */
  pid?: number;
  /**
   * Mount ids (mountinfo) of the mounts this made: the blob's, then the overlay's. What is at the
   * target is unmounted only if it is one of them (absent in states of older versions).
   */
  mountIds?: number[];
  mountedAt: string;
}

/** True when this process mounts as root (the kernel backend and overlayfs need it; FUSE does not). */
export function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

/**
 * False for a process of a user namespace other than the first one (root of a rootless
 * container, `unshare -Ur`): it may mount FUSE in its own mount namespace, but not the kernel
 * module, and the host's /run/unionblob is not its to use.
 */
export function inInitialUserNamespace(): boolean {
  if (initialUserNs === undefined) {
    try {
      // the initial namespace maps every id to itself: "0 0 4294967295"
      initialUserNs = /^\s*0\s+0\s+4294967295\s*$/.test(readFileSync('/proc/self/uid_map', 'utf8'));
    } catch {
      initialUserNs = true; // no /proc: nothing says otherwise
    }
  }
  return initialUserNs;
}
let initialUserNs: boolean | undefined;

/** Root of the host: its mounts' state is the system's, in /run/unionblob. */
function hostRoot(): boolean {
  return isRoot() && inInitialUserNamespace();
}

export function runDir(): string {
  if (process.env.UNIONBLOB_RUN_DIR) return process.env.UNIONBLOB_RUN_DIR;
  if (hostRoot()) return '/run/unionblob';
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime && path.isAbsolute(runtime)) return path.join(runtime, 'unionblob');
  return path.join(os.tmpdir(), `unionblob-${process.geteuid!()}`);
}

export function keyOf(target: string): string {
  return createHash('sha256').update(target).digest('hex').slice(0, 16);
}

export function statePath(key: string): string {
  return path.join(runDir(), 'mounts', `${key}.json`);
}

export function pidPath(key: string): string {
  return path.join(runDir(), 'mounts', `${key}.pid`);
}

export function logPath(key: string): string {
  return path.join(runDir(), 'mounts', `${key}.log`);
}

/** Held by cfs mount and umount of the target while they work; deleted with the state. */
export function lockPath(key: string): string {
  return path.join(runDir(), 'mounts', `${key}.lock`);
}

export function lowerPath(key: string): string {
  return path.join(runDir(), 'lower', key);
}

export function ensureRunDirs(): void {
  const dir = runDir();
  makeDirs(dir, 0o700);
  if (!hostRoot()) checkPrivate(dir);
  makeDirs(path.join(dir, 'mounts'), 0o700);
  makeDirs(path.join(dir, 'lower'), 0o700);
}

/** A non-root user's state directory must be its own, a real directory, closed to others. */
function checkPrivate(dir: string): void {
  const st = lstatSync(dir);
  const uid = process.geteuid!();
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) {
    throw new Error(`${dir}: not a private directory of uid ${uid} (${st.isDirectory() ? `owner ${st.uid}, mode ${(st.mode & 0o777).toString(8)}` : 'not a directory'}); set XDG_RUNTIME_DIR or UNIONBLOB_RUN_DIR to one`);
  }
}

export function readState(key: string): MountState | undefined {
  try {
    return JSON.parse(readFileSync(statePath(key), 'utf8')) as MountState;
  } catch (err: any) {
    if (err.code === 'ENOENT') return undefined;
    if (err instanceof SyntaxError) return undefined; // torn by a crash: nothing usable in it
    throw err;
  }
}

/** Written to a temp name and renamed, so a crash never leaves half a state file. */
export function writeState(key: string, state: MountState): void {
  const file = statePath(key);
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

export function removeState(key: string): void {
  for (const file of [statePath(key), pidPath(key), logPath(key)]) rmSync(file, { force: true });
}

export function readPid(key: string): number | undefined {
  try {
    const pid = Number(readFileSync(pidPath(key), 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}
