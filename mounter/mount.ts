// `cfs mount`, `cfs umount`, `cfs install-helper`: put a blob on a directory, through the
// unionblob kernel module where it is loaded, else through the FUSE server
// (mounter/fuse/unionblob-fuse), optionally with a writable overlayfs upper on top.
//
// Read-only:   BLOB --(kernel | FUSE)--> TARGET
// Writable:    BLOB --(kernel | FUSE)--> /run/unionblob/lower/<key>  (hidden, 0700)
//              overlay lowerdir=<that>,upperdir=U,workdir=W -------> TARGET
// Id-mapped:   BLOB --(FUSE, -o uidmap=,gidmap=)--> TARGET, or
//              BLOB --kernel--> /run/unionblob/lower/<key> --idmapped bind--> TARGET
//
// Once the overlay is up, the hidden lower is detached: overlayfs keeps its own private clone
// of each lower mount, so the blob's mount lives exactly as long as the overlay, and a plain
// umount(8) of TARGET releases the whole stack (the FUSE server exits with its last mount).
//
// Every mount records a MountState (mounter/state.ts) keyed by the target, so `cfs umount
// TARGET` finds the FUSE server, and nothing stray remains. The same code
// serves the mount(8) helper (mounter/helper.ts), so `mount -t unionblob` and /etc/fstab
// behave exactly like `cfs mount`.
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmdirSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Option, type Command } from 'commander';
import { openBlob, sourceFromFile, BlobError } from '../format/decode.js';
import { hashFile } from '../compiler/store.js';
import { lockFile } from '../compiler/roots.js';
import { checkDirectory as checkDirectoryOr, collectStores } from '../compiler/options.js';
import { MOUNT_ATTR, type MountOption, addonBuilt, fsMount, idmapBind, mountAttrFromFlags } from './addon.js';
import { withUserNamespace } from './userns.js';
import { isMountPoint, isUnionblobType, mountsAt, readMountinfo } from './mountinfo.js';
import {
  type Backend, type MountState, ensureRunDirs, inInitialUserNamespace, isRoot, keyOf, lockPath, logPath, lowerPath, pidPath, readPid, readState,
  removeState, writeState,
} from './state.js';

export type BackendChoice = Backend | 'auto';
export type VerityMode = 'off' | 'try' | 'require';
/**
 * Where the FUSE backend caches file pages (mounter/README.md): `private` in the mount's own
 * page cache, with no round trip to the server per open(); `shared` with the store's own files
 * (kernel FUSE passthrough), at the cost of one round trip per open(); `auto` one round trip per
 * open(), big files shared with the store and small ones kept in the mount's page cache.
 */
export type FuseCache = 'auto' | 'private' | 'shared';

export interface MountRequest {
  blob: string;
  target: string;
  stores: string[];
  upper?: string;
  work?: string;
  backend?: BackendChoice;
  /** Expected fs-verity digest of the blob (64 hex digits). */
  digest?: string;
  verity?: VerityMode;
  /** FUSE backend only (the kernel module always shares the store's page cache). */
  fuseCache?: FuseCache;
  /** Generic mount flags for the visible mount: nosuid, nodev, noexec, noatime, ... */
  flags?: string[];
  /**
   * Ids shown through a mapping (a container in its own user namespace): the blob's ids
   * FIRST..FIRST+COUNT-1 appear as MAPPED..; others as the overflow id 65534. "FIRST:MAPPED:COUNT",
   * several joined by ',' (containerd's uidmapping label). Served by the FUSE server.
   */
  uidmap?: string;
  gidmap?: string;
  /** Validate everything, mount nothing (mount -f). */
  fake?: boolean;
  /** With an upper: mount the overlay read-only (mount -r / -o ro with upperdir=, as overlayfs does). */
  readOnly?: boolean;
  /** Progress and backend notes (stderr in the CLI). */
  log?: (line: string) => void;
}

export interface IdRange {
  inside: number;
  outside: number;
  count: number;
}

const ID_MAX = 0xffffffff;

/**
 * "FIRST:MAPPED:COUNT[,FIRST:MAPPED:COUNT...]" as containerd writes its uidmapping labels (':' between
 * triples too, as fuse-overlayfs takes them); ranges of FIRST must not overlap.
 */
export function parseIdMap(what: string, text: string): IdRange[] {
  const bad = (why: string): never => {
    throw new MountError(`${what} ${JSON.stringify(text)}: ${why}`);
  };
  const nums = text.split(/[,:]/);
  if (nums.length === 0 || nums.length % 3 !== 0 || nums.some((n) => !/^\d{1,10}$/.test(n))) {
    bad('expected FIRST:MAPPED:COUNT, several joined by commas (decimal ids)');
  }
  const ranges: IdRange[] = [];
  for (let i = 0; i < nums.length; i += 3) {
    const [inside, outside, count] = nums.slice(i, i + 3).map(Number);
    if (count === 0) bad('a range of 0 ids');
    // 4294967295 is no id (the kernel's -1)
    if (inside + count - 1 >= ID_MAX || outside + count - 1 >= ID_MAX) bad('ids beyond 4294967294');
    if (ranges.some((r) => (inside < r.inside + r.count && r.inside < inside + count) ||
      (outside < r.outside + r.count && r.outside < outside + count))) bad('ranges overlap');
    ranges.push({ inside, outside, count });
  }
  if (ranges.length > 64) bad('more than 64 ranges');
  return ranges;
}

/** The id `id` shows as through `ranges`; null where no range has it (the FUSE server gives no id then). */
export function mapId(ranges: IdRange[], id: number): number | null {
  for (const r of ranges) if (id >= r.inside && id - r.inside < r.count) return r.outside + (id - r.inside);
  return null;
}

/** The FUSE server's form of a mapping: the triples joined by ':' (its option string is split at commas). */
function fuseIdMap(ranges: IdRange[]): string {
  return ranges.map((r) => `${r.inside}:${r.outside}:${r.count}`).join(':');
}

/** A failure with a message meant for the user as it is. */
export class MountError extends Error {
  override name = 'MountError';
}

/** Mount flags passed through to the kernel; everything else is ours or an error. */
export const GENERIC_FLAGS = new Set([
  'suid', 'nosuid', 'dev', 'nodev', 'exec', 'noexec', 'atime', 'noatime', 'relatime', 'norelatime',
  'strictatime', 'nostrictatime', 'diratime', 'nodiratime', 'sync', 'async', 'dirsync',
  'symfollow', 'nosymfollow',
]);

const BACKENDS: BackendChoice[] = ['auto', 'kernel', 'fuse'];
const VERITY_MODES: VerityMode[] = ['off', 'try', 'require'];
export const FUSE_CACHES: FuseCache[] = ['auto', 'private', 'shared'];
/** What the FUSE server is started with when no cache is asked for (bench/mount/README.md, run 5). */
export const DEFAULT_FUSE_CACHE: FuseCache = 'private';
const COMMAND_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// Paths and checks

/** The package root (dist/mounter/mount.js -> ../../). */
export function packageRoot(): string {
  return fileURLToPath(new URL('../../', import.meta.url));
}

/**
 * The target as mountinfo spells it, without touching the target itself: stat() of a dead FUSE
 * mountpoint fails and of a stopped one hangs, so only its parent is resolved.
 */
export function canonicalTarget(target: string): string {
  const abs = path.resolve(target);
  if (abs === '/') return abs;
  try {
    return path.join(realpathSync(path.dirname(abs)), path.basename(abs));
  } catch {
    return abs;
  }
}

/**
 * canonicalTarget, following the target when it is a symlink (cfs mount keys its state on the
 * real path). Only a path where nothing is mounted is lstat'ed: a mountpoint is never a symlink,
 * and stat of a stopped FUSE mount would hang.
 */
function canonicalTargetThroughLinks(target: string): string {
  let at = canonicalTarget(target);
  for (let hops = 0; hops < 40; hops++) {
    if (mountsAt(at, readMountinfo()).length > 0) return at;
    try {
      if (!lstatSync(at).isSymbolicLink()) return at;
      at = canonicalTarget(path.resolve(path.dirname(at), readlinkSync(at)));
    } catch {
      return at;
    }
  }
  return at;
}

/** Paths end up inside comma- and colon-separated mount options, which cannot quote them. */
function checkOptionSafe(what: string, p: string): void {
  if (/[,:\n\\]/.test(p)) throw new MountError(`${what} ${p}: paths with ',', ':', '\\' or newlines cannot be mount options`);
}

function checkDirectory(what: string, p: string): void {
  checkDirectoryOr(what, p, (message) => new MountError(message));
}

/** Refuses a bad blob with one clear line before anything is mounted. */
export function validateBlob(blob: string): void {
  let src;
  try {
    src = sourceFromFile(blob);
  } catch (err: any) {
    throw new MountError(`${blob}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
  }
  try {
    openBlob(src);
  } catch (err: any) {
    if (err instanceof BlobError) throw new MountError(`${blob}: not a valid unionblob blob: ${err.message}`);
    throw err;
  } finally {
    src.close();
  }
}

async function checkDigest(blob: string, expected: string): Promise<void> {
  const got = (await hashFile(blob)).toString('hex');
  if (got !== expected) {
    throw new MountError(`${blob}: fs-verity digest is ${got}, expected ${expected}`);
  }
}

function normalizeRequest(req: MountRequest): Required<Pick<MountRequest, 'blob' | 'target' | 'stores' | 'backend' | 'flags'>> & MountRequest {
  const backend = req.backend ?? 'auto';
  if (!BACKENDS.includes(backend)) throw new MountError(`backend ${backend}: expected auto, kernel or fuse`);
  if (req.verity !== undefined && !VERITY_MODES.includes(req.verity)) {
    throw new MountError(`verity ${req.verity}: expected off, try or require`);
  }
  if (req.fuseCache !== undefined && !FUSE_CACHES.includes(req.fuseCache)) {
    throw new MountError(`FUSE cache ${req.fuseCache}: expected ${FUSE_CACHES.join(', ')}`);
  }
  if (req.digest !== undefined && !/^[0-9a-fA-F]{64}$/.test(req.digest)) {
    throw new MountError(`digest ${req.digest}: expected 64 hex digits (the blob's fs-verity SHA-256 digest)`);
  }
  if ((req.upper === undefined) !== (req.work === undefined)) {
    throw new MountError('--upper and --work go together (overlayfs needs both, on the same filesystem)');
  }
  if (req.upper !== undefined && !isRoot()) {
    throw new MountError('a writable upper needs root: overlayfs cannot be mounted without CAP_SYS_ADMIN (without root, mount read-only)');
  }
  let backendChosen = backend;
  if (req.uidmap !== undefined || req.gidmap !== undefined) {
    if (req.uidmap === undefined || req.gidmap === undefined) throw new MountError('--uidmap and --gidmap go together');
    parseIdMap('--uidmap', req.uidmap);
    parseIdMap('--gidmap', req.gidmap);
    // The FUSE server maps ids itself; the kernel module's mount is mapped by an idmapped bind
    // (open_tree + mount_setattr MOUNT_ATTR_IDMAP, through the addon), without an upper.
    const kernelMaps = req.upper === undefined && addonBuilt();
    if (backend === 'kernel' && !kernelMaps) {
      throw new MountError(req.upper !== undefined
        ? '--uidmap/--gidmap with --upper are served by the FUSE server (--backend fuse): the kernel module\'s mount is mapped by an idmapped bind, without an upper'
        : '--uidmap/--gidmap on the kernel module need the Node-API addon for the idmapped mount (npm run build:addon), or --backend fuse');
    }
    if (!kernelMaps) backendChosen = 'fuse';
  }
  const stores = req.stores.flatMap((s) => s.split(':')).filter((s) => s !== '').map((s) => path.resolve(s));
  if (stores.length === 0) throw new MountError('at least one object store is needed (--store DIR, basedir=DIR)');
  for (const flag of req.flags ?? []) {
    if (!GENERIC_FLAGS.has(flag)) throw new MountError(`unknown mount flag ${flag}`);
  }
  if (lastSays(req.flags ?? [], 'nosymfollow', 'symfollow') && !isRoot()) {
    // libfuse takes no nosymfollow; we set it on the mount afterwards, which fusermount3 cannot do
    throw new MountError('nosymfollow on a FUSE mount needs root (it is set on the mount after the server mounts it)');
  }
  return {
    ...req,
    blob: path.resolve(req.blob),
    target: path.resolve(req.target),
    stores,
    backend: backendChosen,
    digest: req.digest?.toLowerCase(),
    upper: req.upper === undefined ? undefined : path.resolve(req.upper),
    work: req.work === undefined ? undefined : path.resolve(req.work),
    flags: req.flags ?? [],
  };
}

// ---------------------------------------------------------------------------------------------
// Running mount(8), umount(8) and the FUSE server

interface RunResult {
  ok: boolean;
  stderr: string;
  timedOut: boolean;
}

/**
 * What a failed command said, in one line, or `fallback` when it said nothing. mount(8)'s first
 * line (it adds "dmesg(1) may have more information..." on a second); the FUSE server's every
 * line (libfuse may warn before the error), joined.
 */
function said(r: RunResult, fallback: string, which: 'first' | 'all' = 'first'): string {
  const lines = r.stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (lines.length === 0) return fallback;
  return which === 'first' ? lines[0] : lines.join('; ');
}

function run(cmd: string, args: string[], timeoutMs = COMMAND_TIMEOUT_MS): RunResult {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: timeoutMs, encoding: 'utf8' });
  if (r.error && (r.error as any).code === 'ENOENT') {
    return { ok: false, stderr: `${cmd}: not found`, timedOut: false };
  }
  const timedOut = (r.error as any)?.code === 'ETIMEDOUT';
  return { ok: r.status === 0, stderr: (r.stderr ?? '').trim(), timedOut };
}

/** The FUSE server: $UNIONBLOB_FUSE, the one built in this checkout, or the one on PATH. */
export function fuseServerPath(): string {
  if (process.env.UNIONBLOB_FUSE) return process.env.UNIONBLOB_FUSE;
  const built = path.join(packageRoot(), 'mounter', 'fuse', 'unionblob-fuse');
  if (existsSync(built)) return built;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(path.join(dir, 'unionblob-fuse'))) return path.join(dir, 'unionblob-fuse');
  }
  throw new MountError(`unionblob-fuse is not built: run make -C ${path.join(packageRoot(), 'mounter', 'fuse')}`);
}

function kernelHasUnionblob(): boolean {
  try {
    return /\tunionblob$/m.test(readFileSync('/proc/filesystems', 'utf8'));
  } catch {
    return false;
  }
}

/** auto: the kernel module when it is (or can be) loaded, else FUSE. */
export function chooseBackend(choice: BackendChoice, log: (line: string) => void): Backend {
  if (!isRoot()) {
    // FUSE through the setuid fusermount3, as libfuse does for any user; mount(2) needs root
    if (choice === 'kernel') throw new MountError('the kernel backend needs root (mounting a filesystem needs CAP_SYS_ADMIN); without root, cfs mount uses FUSE');
    if (choice === 'auto') log('not root: using FUSE (unionblob-fuse, mounted through fusermount3; only this user sees the files)');
    return 'fuse';
  }
  if (!inInitialUserNamespace()) {
    // FUSE may be mounted in a user namespace's own mount namespace; the module may not (a blob
    // is the host's to trust), so only FUSE serves root of a rootless container
    if (choice === 'kernel') throw new MountError('the kernel backend cannot mount from a user namespace (root of a rootless container): cfs mount uses FUSE there');
    if (choice === 'auto') log('root of a user namespace: using FUSE (unionblob-fuse; the kernel module mounts only for the host\'s root)');
    return 'fuse';
  }
  if (choice !== 'auto') return choice;
  if (kernelHasUnionblob() || (run('modprobe', ['-q', 'unionblob'], 10_000).ok && kernelHasUnionblob())) {
    log('using the unionblob kernel module');
    return 'kernel';
  }
  log('no unionblob kernel module here: using FUSE (unionblob-fuse)');
  return 'fuse';
}

/** libfuse 3.14 refuses these; nosymfollow is set on the FUSE mount afterwards (setNoSymfollow). */
const SYMFOLLOW_FLAGS = new Set(['symfollow', 'nosymfollow']);

/** Whether the last of `flags` naming `on` or `off` is `on` (mount(8): the last one wins). */
function lastSays(flags: readonly string[], on: string, off: string): boolean {
  const last = flags.filter((f) => f === on || f === off).at(-1);
  return last === on;
}

/**
 * MS_NOSYMFOLLOW on a mount that is up (a bind remount changes only the mount's own flags and
 * keeps the others: util-linux reads them from mountinfo).
 */
function setNoSymfollow(at: string): void {
  const r = run('mount', ['-i', '-o', 'remount,bind,nosymfollow', at]);
  if (!r.ok) throw new MountError(`nosymfollow on ${at} failed: ${said(r, 'mount failed')}`);
}

/** Access-time flags: no effect on a read-only mount, and libfuse refuses several of them. */
const ATIME_FLAGS = new Set(['atime', 'noatime', 'relatime', 'norelatime', 'strictatime', 'nostrictatime', 'diratime', 'nodiratime']);

/**
 * FUSE mounts default to nosuid,nodev; a container image needs what the kernel module gives.
 * Not for a user other than root: fusermount3 makes such mounts nosuid,nodev whatever is asked.
 */
function fuseFlags(flags: string[]): string[] {
  const out = flags.filter((f) => !ATIME_FLAGS.has(f) && !SYMFOLLOW_FLAGS.has(f));
  if (!isRoot()) return out.filter((f) => f !== 'suid' && f !== 'dev');
  if (!flags.includes('nosuid')) out.push('suid');
  if (!flags.includes('nodev')) out.push('dev');
  return out;
}

/** Starts the FUSE server on `at`; it returns once the mount exists. Returns the server's pid. */
function mountFuse(req: MountRequest, at: string, key: string, flags: string[]): number | undefined {
  const opts = [
    `basedir=${req.stores.join(':')}`,
    `verity=${req.verity ?? 'off'}`,
    `cache=${req.fuseCache ?? DEFAULT_FUSE_CACHE}`,
    // others (root included) see a user's mount only with user_allow_other in /etc/fuse.conf
    ...(isRoot() ? ['allow_other'] : []),
    ...fuseFlags(flags),
    `pidfile=${pidPath(key)}`,
    `logfile=${logPath(key)}`,
  ];
  if (req.uidmap !== undefined && req.gidmap !== undefined) {
    opts.push(`uidmap=${fuseIdMap(parseIdMap('uidmap', req.uidmap))}`, `gidmap=${fuseIdMap(parseIdMap('gidmap', req.gidmap))}`);
  }
  const r = run(fuseServerPath(), [req.blob, at, '-o', opts.join(',')]);
  if (!r.ok) throw new MountError(`FUSE mount of ${req.blob} on ${at} failed: ${said(r, 'unionblob-fuse failed', 'all')}`);
  const pid = readPid(key);
  if (lastSays(flags, 'nosymfollow', 'symfollow')) setNoSymfollow(at); // a failure releases the mount (mountLocked)
  return pid;
}

/** The longest string value fsconfig(2) accepts (it copies the value with strndup_user(v, 256)). */
const FSCONFIG_STRING_MAX = 255;

/** The kernel module's own options (kmod/README.md), as fsconfig keys and values. */
function kernelOptions(req: MountRequest): MountOption[] {
  const opts: MountOption[] = [['ro'], ['basedir', req.stores.join(':')]];
  if (req.verity) opts.push(['verity', req.verity]);
  if (req.digest) opts.push(['digest', req.digest]);
  return opts;
}

/**
 * Through the addon's fsopen/fsconfig/fsmount, so the module's own message (a bad digest=, a
 * missing store) reaches the user; mount(2) would leave it in the kernel log.
 */
function mountKernel(req: MountRequest, at: string, flags: string[]): void {
  if (!addonBuilt()) {
    req.log?.('the Node-API addon is not built (npm run build:addon): mounting with mount(8)');
    mountKernelWithMount8(req, at, flags);
    return;
  }
  const { attr, sbFlags } = mountAttrFromFlags(flags);
  const options = [...kernelOptions(req), ...sbFlags.map((f): MountOption => [f])];
  const long = [['source', req.blob], ...options].find(([, v]) => v !== undefined && Buffer.byteLength(v) > FSCONFIG_STRING_MAX);
  if (long) {
    // fsconfig(2) copies at most 255 bytes of a string (EINVAL beyond); mount(2) takes a page
    req.log?.(`${long[0]} is longer than fsconfig(2) takes (${FSCONFIG_STRING_MAX} bytes): mounting with mount(8)`);
    mountKernelWithMount8(req, at, flags);
    return;
  }
  let messages: string[];
  try {
    ({ messages } = fsMount({ fstype: 'unionblob', source: req.blob, options, flags: attr | MOUNT_ATTR.RDONLY, target: at }));
  } catch (err) {
    throw new MountError(`kernel mount of ${req.blob} on ${at} failed: ${(err as Error).message}`);
  }
  for (const line of messages) req.log?.(`kernel: ${line}`);
}

function mountKernelWithMount8(req: MountRequest, at: string, flags: string[]): void {
  const opts = kernelOptions(req).map(([k, v]) => (v === undefined ? k : `${k}=${v}`));
  // -i: do not hand the mount back to /sbin/mount.unionblob, which would call us again.
  const r = run('mount', ['-i', '-t', 'unionblob', '-o', [...opts, ...flags].join(','), req.blob, at]);
  if (!r.ok) throw new MountError(`kernel mount of ${req.blob} on ${at} failed: ${said(r, 'mount failed')}`);
}

/**
 * Options for every overlay whose upper may be compiled with applyOverlayDiff: the features
 * compiler/overlaydiff.ts refuses, off whatever the kernel's module defaults
 * (CONFIG_OVERLAY_FS_REDIRECT_DIR, _INDEX, _METACOPY). containerd's overlay snapshotter pins
 * index=off the same way.
 */
export const OVERLAY_MOUNT_OPTIONS: readonly string[] = ['index=off', 'redirect_dir=on', 'metacopy=on'];
/**
 * The same from a user namespace (root of a rootless container), where overlayfs keeps its
 * bookkeeping in user.overlay.* (userxattr) and refuses redirects and metacopy: renaming a
 * merged directory is EXDEV there (mv copies), a chown copies the data up. `cfs build --from`
 * reads such an upper with --userxattr (its default inside a user namespace).
 */
export const OVERLAY_USERNS_MOUNT_OPTIONS: readonly string[] = ['userxattr', 'index=off', 'redirect_dir=nofollow', 'metacopy=off'];

/**
 * The overlay's source is the blob, so the mount table (and `mount -a`, matching fstab lines
 * by source and target) says what is mounted there.
 */
function mountOverlay(blob: string, lower: string, upper: string, work: string, target: string, flags: string[]): void {
  // an upper that `cfs build --from` can compile: no redirects, metacopy or index links (compiler/overlaydiff.ts)
  const pinned = inInitialUserNamespace() ? OVERLAY_MOUNT_OPTIONS : OVERLAY_USERNS_MOUNT_OPTIONS;
  const opts = [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work}`, ...pinned, ...flags];
  const r = run('mount', ['-i', '-t', 'overlay', '-o', opts.join(','), blob, target]);
  if (!r.ok) throw new MountError(`overlay mount on ${target} failed: ${said(r, 'mount failed')}`);
}

/**
 * Unmounts `at`; a busy or unresponsive mount is detached lazily instead of left behind. -c: the
 * path is already canonical, and canonicalizing it would stat() a possibly hung mount.
 */
function unmountPath(at: string, log: (line: string) => void): void {
  if (!isMountPoint(at)) return;
  // a user's FUSE mount is released by fusermount3 (umount(2) needs root); -z: lazily
  const [cmd, now, lazily] = isRoot() ? ['umount', ['-c', at], ['-c', '-l', at]] : ['fusermount3', ['-u', at], ['-u', '-z', at]];
  const r = run(cmd, now, 10_000);
  if (r.ok) return;
  log(`umount ${at}: ${r.timedOut ? 'timed out' : r.stderr || 'failed'}; detaching it lazily`);
  const lazy = run(cmd, lazily, 10_000);
  if (!lazy.ok && isMountPoint(at)) throw new MountError(`cannot unmount ${at}: ${lazy.stderr}`);
}

// ---------------------------------------------------------------------------------------------
// The FUSE server process

function processState(pid: number): string | undefined {
  try {
    // "pid (comm) S ...": the state letter follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/**
 * Alive and still our server: unionblob-fuse serving `mountpoint` (argv: server BLOB MOUNTPOINT
 * -o ...). A recycled pid, even another mount's server, must never be killed.
 */
function isOurServer(pid: number, mountpoint: string): boolean {
  const state = processState(pid);
  if (state === undefined || state === 'Z' || state === 'X') return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    return argv[0].endsWith('unionblob-fuse') && argv[2] === mountpoint;
  } catch {
    return false;
  }
}

/**
 * Whether the mount cfs made at `target` (canonical) still has its FUSE server; true for the
 * kernel backend, which has none. Decided from the state and /proc only: a call on the mount
 * itself (stat, statfs) would wait forever in the kernel if the server is stopped.
 */
export function serverAlive(target: string): boolean {
  const key = keyOf(target);
  const state = readState(key);
  if (state === undefined || state.backend !== 'fuse') return true; // the kernel's, or not ours: nothing to ask
  const pid = readPid(key) ?? state.pid;
  return pid !== undefined && isOurServer(pid, state.lower);
}

/**
 * After the unmount the server sees its connection close and exits by itself; one that does
 * not (stopped, or a lazily detached mount still in use) is killed. SIGKILL, not SIGTERM: a
 * terminating server unmounts its mountpoint path, which may by now be somebody else's mount.
 */
async function stopServer(pid: number, mountpoint: string, log: (line: string) => void): Promise<void> {
  for (let i = 0; i < 40 && isOurServer(pid, mountpoint); i++) await sleep(50);
  if (!isOurServer(pid, mountpoint)) return;
  log(`FUSE server ${pid} did not exit after the unmount: killing it`);
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone in the meantime
  }
  for (let i = 0; i < 40 && isOurServer(pid, mountpoint); i++) await sleep(50);
}

// ---------------------------------------------------------------------------------------------
// mount and umount

/**
 * Whether what `state.target` shows is the mount `state` made: the blob itself, or the overlay
 * on its hidden lower. Anything else there (a mount made later on top, or the filesystem that
 * was there before) is not ours to unmount.
 */
function ownsTopMount(state: MountState): boolean {
  const top = mountsAt(state.target, readMountinfo()).at(-1);
  if (!top) return false;
  if (state.mountIds) return state.mountIds.includes(top.id);
  if (state.lower === state.target) return isUnionblobType(top.fsType);
  return top.fsType === 'overlay' && top.superOptions.split(',').includes(`lowerdir=${state.lower}`);
}

/** The id of the newest mount at `at` (the one just made there). */
function topMountId(at: string): number | undefined {
  return mountsAt(at, readMountinfo()).at(-1)?.id;
}

/**
 * Releases what a recorded mount left: the target's mount, the hidden lower, the server. When
 * our mount is still at the target under somebody else's, nothing is touched: stopping the
 * server or detaching the lower would leave that mount dead once the one on top goes.
 */
async function releaseMount(state: MountState, key: string, log: (line: string) => void): Promise<void> {
  const atTarget = mountsAt(state.target, readMountinfo());
  if (state.mountIds && !ownsTopMount(state) && atTarget.some((m) => state.mountIds!.includes(m.id))) {
    throw new MountError(`${state.target}: another mount (${atTarget.at(-1)!.fsType}) is on top of ours: unmount it first`);
  }
  if (ownsTopMount(state)) unmountPath(state.target, log);
  if (state.lower !== state.target) {
    // The overlay is gone, so nothing holds the lower but stray users: detach it now.
    if (isMountPoint(state.lower)) {
      const r = run('umount', ['-c', '-l', state.lower], 10_000);
      if (!r.ok && isMountPoint(state.lower)) throw new MountError(`cannot unmount ${state.lower}: ${r.stderr}`);
    }
    try {
      rmdirSync(state.lower);
    } catch (err: any) {
      if (err.code !== 'ENOENT') log(`cannot remove ${state.lower}: ${err.message}`);
    }
  }
  if (state.pid) await stopServer(state.pid, state.lower, log);
  removeState(key);
}

/**
 * The overlay holds a private clone of its lower mount: the hidden one can go, and the blob's
 * mount then ends with the overlay's, whoever unmounts it (the FUSE server exits then).
 */
function detachLower(lower: string, log: (line: string) => void): void {
  const r = run('umount', ['-c', '-l', lower], 10_000);
  if (!r.ok && isMountPoint(lower)) {
    log(`could not detach the hidden lower ${lower} (${r.stderr}); cfs umount releases it`);
    return;
  }
  try {
    rmdirSync(lower);
  } catch {
    // released with the state
  }
}

/** Mounts the blob itself at `at` with the chosen backend. */
function mountBlobAt(req: MountRequest, backend: Backend, at: string, key: string, flags: string[]): number | undefined {
  if (backend === 'kernel') {
    mountKernel(req, at, flags);
    return undefined;
  }
  return mountFuse(req, at, key, flags);
}

export async function mountBlob(request: MountRequest): Promise<MountState> {
  const log = request.log ?? (() => {});
  const req = normalizeRequest(request);
  validateBlob(req.blob);
  for (const store of req.stores) {
    checkOptionSafe('store', store);
    checkDirectory('store', store);
  }
  checkDirectory('target', req.target);
  const target = realpathSync(req.target);
  if (req.upper) {
    checkOptionSafe('upper', req.upper);
    checkOptionSafe('work', req.work!);
    checkDirectory('upper', req.upper);
    checkDirectory('work', req.work!);
  }
  const backend = chooseBackend(req.backend, log);
  if (backend === 'fuse') {
    fuseServerPath();
    // The kernel checks digest= itself; FUSE has nobody but us to do it.
    if (req.digest) await checkDigest(req.blob, req.digest);
  }
  if (req.fake) return fakeState(req, target, backend);

  const key = keyOf(target);
  ensureRunDirs();
  const lock = await lockFile(lockPath(key));
  try {
    return await mountLocked(req, target, key, backend, log);
  } finally {
    releaseTargetLock(lock, key);
  }
}

/** Drop the target's lock, and its file when no state is left (lock files do not pile up in /run). */
function releaseTargetLock(lock: { release(): void }, key: string): void {
  if (readState(key) === undefined) rmSync(lockPath(key), { force: true });
  lock.release();
}

/** mountBlob's work, under the target's lock. */
async function mountLocked(req: ReturnType<typeof normalizeRequest>, target: string, key: string, backend: Backend, log: (line: string) => void): Promise<MountState> {
  await clearStaleState(key, target, log);
  const state: MountState = {
    version: 1, target, blob: req.blob, stores: req.stores, backend, lower: target, mountedAt: new Date().toISOString(),
  };
  // the module's mount seen through a uid/gid mapping: an idmapped bind of a hidden mount
  const idmapped = backend === 'kernel' && req.uidmap !== undefined && req.gidmap !== undefined;
  if (req.upper || idmapped) {
    state.lower = lowerPath(key);
    mkdirSync(state.lower, { recursive: true, mode: 0o700 });
  }
  if (req.upper) {
    state.upper = req.upper;
    state.work = req.work;
  }
  // Recorded before mounting, so even a half-done mount can be released by `cfs umount`; with
  // no mount id yet, releasing it unmounts nothing that was at the target before.
  state.mountIds = [];
  writeState(key, state);
  const before = new Set([...mountsAt(state.lower, readMountinfo()), ...mountsAt(target, readMountinfo())].map((m) => m.id));
  try {
    state.pid = mountBlobAt(req, backend, state.lower, key, req.upper ? [] : req.flags);
    const blobMount = topMountId(state.lower);
    if (blobMount !== undefined) state.mountIds.push(blobMount);
    writeState(key, state);
    if (idmapped) {
      // the bind keeps the hidden mount's flags (nosuid, ...) and its superblock alive
      const uid = parseIdMap('--uidmap', req.uidmap!);
      const gid = parseIdMap('--gidmap', req.gidmap!);
      await withUserNamespace(uid, gid, (fd) => idmapBind(state.lower, target, fd));
      const bind = topMountId(target);
      if (bind !== undefined) state.mountIds.push(bind);
      writeState(key, state);
      detachLower(state.lower, log);
    } else if (req.upper) {
      mountOverlay(req.blob, state.lower, req.upper, req.work!, target, req.readOnly ? ['ro', ...req.flags] : req.flags);
      const overlay = topMountId(target);
      if (overlay !== undefined) state.mountIds.push(overlay);
      writeState(key, state);
      detachLower(state.lower, log);
    }
  } catch (err) {
    // a mount that appeared although its step failed (a server that mounted, then failed) is ours too
    for (const m of [...mountsAt(state.lower, readMountinfo()), ...mountsAt(target, readMountinfo())]) {
      if (!before.has(m.id) && !state.mountIds.includes(m.id)) state.mountIds.push(m.id);
    }
    await releaseMount(state, key, log).catch(() => {});
    throw err;
  }
  return state;
}

function fakeState(req: MountRequest, target: string, backend: Backend): MountState {
  const key = keyOf(target);
  return {
    version: 1, target, blob: req.blob, stores: req.stores, backend,
    lower: req.upper ? lowerPath(key) : target, upper: req.upper, work: req.work, mountedAt: new Date().toISOString(),
  };
}

/**
 * A state whose target is no longer mounted (unmounted with plain umount(8), or a crash in the
 * middle of cfs mount) is released before the target is used again; a live one is an error.
 */
async function clearStaleState(key: string, target: string, log: (line: string) => void): Promise<void> {
  const old = readState(key);
  if (!old) return;
  if (ownsTopMount(old)) throw new MountError(`${target} is already mounted (cfs umount ${target} first)`);
  await releaseMount(old, key, log);
}

export interface UmountOptions {
  log?: (line: string) => void;
}

export async function umountTarget(targetArg: string, opts: UmountOptions = {}): Promise<void> {
  const log = opts.log ?? (() => {});
  const target = canonicalTargetThroughLinks(targetArg);
  const key = keyOf(target);
  ensureRunDirs();
  const lock = await lockFile(lockPath(key));
  let state;
  try {
    state = readState(key);
    if (state) await releaseMount(state, key, log);
  } finally {
    releaseTargetLock(lock, key);
  }
  if (state) return;
  // Mounted by something that kept no state (e.g. unionblob-fuse run by hand): ours only.
  const top = mountsAt(target, readMountinfo()).at(-1);
  if (!top) throw new MountError(`${target}: not mounted`);
  if (!isUnionblobType(top.fsType)) throw new MountError(`${target}: not a unionblob mount (${top.fsType})`);
  unmountPath(target, log);
}

// ---------------------------------------------------------------------------------------------
// The mount(8) helper

/** Installs mounter/mount.unionblob at `dest` with this checkout and this node pinned in it. */
export function installHelper(dest = '/sbin/mount.unionblob'): string {
  const root = packageRoot().replace(/\/$/, '');
  const script = readFileSync(path.join(root, 'mounter', 'mount.unionblob'), 'utf8')
    .replace(/^UNIONBLOB_ROOT=.*$/m, `UNIONBLOB_ROOT=\${UNIONBLOB_ROOT:-${root}}`)
    .replace(/^UNIONBLOB_NODE=.*$/m, `UNIONBLOB_NODE=\${UNIONBLOB_NODE:-${process.execPath}}`);
  const tmp = `${dest}.tmp-${process.pid}`;
  writeFileSync(tmp, script, { mode: 0o755 });
  chmodSync(tmp, 0o755);
  renameSync(tmp, dest);
  // mount(8) and umount(8) run mount.fuse.unionblob for what they see as type fuse.unionblob
  // (a remount of a FUSE-backed mount); without it, mount.fuse would look for a program
  // called unionblob. A link beside the helper, when it is installed under its own name.
  if (path.basename(dest) === 'mount.unionblob') {
    const fuseLink = path.join(path.dirname(dest), 'mount.fuse.unionblob');
    const linkTmp = `${fuseLink}.tmp-${process.pid}`;
    rmSync(linkTmp, { force: true });
    symlinkSync('mount.unionblob', linkTmp);
    renameSync(linkTmp, fuseLink);
  }
  return dest;
}

// ---------------------------------------------------------------------------------------------
// CLI

function stderrLog(line: string): void {
  process.stderr.write(`cfs: ${line}\n`);
}

export function registerMount(program: Command): void {
  program
    .command('mount')
    .description('mount a blob read-only (kernel module or FUSE), or writable with an overlayfs upper')
    .argument('<blob>', 'the metadata blob (cfs build -o)')
    .argument('<target>', 'directory to mount on')
    .option('--store <dir>', 'object store; repeat (or A:B) to search several in order', collectStores, [])
    .option('--upper <dir>', 'overlayfs upper directory: makes the mount writable')
    .option('--work <dir>', 'overlayfs work directory (same filesystem as --upper)')
    .addOption(new Option('--backend <name>', 'kernel module, FUSE, or whichever is available').choices(BACKENDS).default('auto'))
    .option('--digest <hex>', "refuse the blob unless its fs-verity digest is this")
    .addOption(new Option('--verity <mode>', 'check objects against their digests').choices(VERITY_MODES))
    .addOption(new Option('--fuse-cache <where>', 'FUSE: file pages cached per mount (private: no round trip per open), '
      + 'shared with the store (shared: passthrough), or big files shared and small ones per mount (auto)')
      .choices(FUSE_CACHES).default(DEFAULT_FUSE_CACHE))
    .option('--uidmap <map>', "FIRST:MAPPED:COUNT[,...]: show the blob's uids FIRST.. as MAPPED.. (others as 65534), "
      + 'as a container in its own user namespace needs them (FUSE maps them; on the kernel module, an idmapped bind)')
    .option('--gidmap <map>', 'the same for gids (with --uidmap)')
    .option('-o, --options <flags>', 'mount flags for the target: nosuid,nodev,noexec,noatime,nosymfollow,...')
    .action(async (blob: string, target: string, o: any) => {
      const flags = o.options ? String(o.options).split(',').filter(Boolean) : [];
      await mountBlob({
        blob, target, stores: o.store, upper: o.upper, work: o.work, backend: o.backend,
        digest: o.digest, verity: o.verity, fuseCache: o.fuseCache, uidmap: o.uidmap, gidmap: o.gidmap, flags, log: stderrLog,
      });
    });

  program
    .command('umount')
    .description('unmount what cfs mount put on a target: overlay, hidden lower and FUSE server')
    .argument('<target>', 'the mounted directory')
    .action(async (target: string) => {
      await umountTarget(target, { log: stderrLog });
    });

  program
    .command('install-helper')
    .description('install the mount(8) helper (and mount.fuse.unionblob beside it), so mount -t unionblob, remounts and /etc/fstab work')
    .option('--dest <path>', 'where to install it', '/sbin/mount.unionblob')
    .action((o: { dest: string }) => {
      process.stdout.write(`installed ${installHelper(o.dest)}\n`);
    });
}
