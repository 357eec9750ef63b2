// Store gc roots and the store lock, shared by `cfs build`, `cfs gc` and the snapshotter.
//
// A store may be written by several users: `cfs build --store S` and the containerd
// snapshotter (`--store S`). Each keeps its blobs' objects alive by registering the blob as a
// root: a symlink STORE/roots/<hash of the blob's absolute path> -> that path (`ls -l` shows
// what is kept; deleting the blob, or the symlink, releases it). Collection (`cfs gc`, the
// snapshotter's Cleanup) keeps every object a live root's blob references; a root whose blob
// is gone is dangling and `cfs gc` drops it.
//
// The lock is flock(2) on STORE/.lock: writers (a build, a snapshotter commit) hold it shared
// from before their first object lookup until their blob and root exist; collectors hold it
// exclusive while they read the roots and delete. So a collector never sees a store in which a
// writer has objects its root does not yet cover. The kernel drops the lock when its holder
// dies, so a killed build never blocks gc; and anyone can take it from a shell
// (`flock STORE/.lock ...`). The lock file is unlinked only by a failed build removing the
// empty store it created, and only while it holds the lock exclusively; lockers check after
// locking that the path still names the file they locked (lockStore).
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { makeDirs } from './mkdirs.js';
import { isTempName, TEMP_PREFIX } from './store.js';

export const ROOTS_DIR = 'roots';
export const LOCK_FILE = '.lock';

// ------------------------------------------------------------------------------- lock

export type LockMode = 'shared' | 'exclusive';

export interface StoreLock {
  /** The stores locked (real paths, sorted) and their lock files' descriptors, index for index. */
  readonly stores: readonly string[];
  readonly fds: readonly number[];
  release(): void;
}

export interface LockOptions {
  /** Wait for a conflicting holder (default); false: fail at once with a "busy" error. */
  wait?: boolean;
  /** Called once per store before waiting on it. */
  onWait?: (store: string) => void;
}

/** flock(1)'s exit status when -n finds the lock taken (its -E option). */
const BUSY = 75;

/**
 * flock(2) on our open file description of `fd`, done by flock(1) on the descriptor it
 * inherits: the lock belongs to the description, so it stays ours after flock(1) exits and
 * goes when we close `fd` (or exit). Node has no flock of its own. False: busy (nowait only).
 * Not the Node-API addon's: `cfs build --store` and `cfs gc` must work where the addon was not
 * built (`npm run demo` builds only the TypeScript; mounter/addon.ts loads it lazily for that
 * reason), and util-linux's flock(1) is on every machine the stores live on.
 */
function flockFd(fd: number, mode: LockMode, wait: boolean): Promise<boolean> {
  const args = [mode === 'shared' ? '-s' : '-x', ...(wait ? [] : ['-n']), '-E', String(BUSY), '3'];
  return new Promise((resolve, reject) => {
    const child = spawn('flock', args, { stdio: ['ignore', 'ignore', 'pipe', fd] });
    let err = '';
    child.stderr!.on('data', (d) => { err += d; });
    child.on('error', (e) => reject(new Error(`flock: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve(true);
      else if (code === BUSY && !wait) resolve(false);
      else reject(new Error(`flock ${args.join(' ')} failed (${code}): ${err.trim()}`));
    });
  });
}

/**
 * An exclusive flock(2) on `file` (created if needed), waited for. For short critical sections
 * of other commands (cfs mount and umount of one target). The holder may delete the file before
 * release(): a locker that waited on the deleted file finds another file (or none) at the path
 * once it gets the lock, and locks again.
 */
export async function lockFile(file: string): Promise<{ release(): void }> {
  for (;;) {
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600); // node opens close-on-exec
    try {
      await flockFd(fd, 'exclusive', true);
      const held = fs.fstatSync(fd);
      const now = fs.statSync(file, { throwIfNoEntry: false });
      if (now === undefined || now.ino !== held.ino || now.dev !== held.dev) {
        fs.closeSync(fd);
        continue;
      }
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    let open = true;
    return {
      release() {
        if (open) fs.closeSync(fd);
        open = false;
      },
    };
  }
}

/**
 * Lock every store (creating it if needed), in one global order (sorted real paths) so that
 * two lockers of overlapping store sets cannot deadlock. Throws "busy" with wait: false.
 */
export async function lockStores(stores: string[], mode: LockMode, opts: LockOptions = {}): Promise<StoreLock> {
  const fds: number[] = [];
  const release = () => {
    for (const fd of fds.splice(0)) fs.closeSync(fd);
  };
  const unique = uniqueStores(stores);
  try {
    for (const store of unique) fds.push(await lockStore(store, mode, opts));
  } catch (err) {
    release();
    throw err;
  }
  return { stores: unique, fds, release };
}

/**
 * Lock one store; the open descriptor of its lock file. A failed build's cleanup may unlink
 * the lock file of a store it created (removeIfOnlyOurs, under the exclusive lock): whoever
 * opened that file before the unlink gets its lock afterwards, on a file no one else will ever
 * open. So after locking, check that the path still names the file we locked; if not, start
 * again on the store as it is now (the lock-file-with-unlink protocol).
 */
async function lockStore(store: string, mode: LockMode, opts: LockOptions): Promise<number> {
  const wait = opts.wait ?? true;
  const file = path.join(store, LOCK_FILE);
  let waited = false;
  for (;;) {
    makeDirs(store);
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_CREAT, 0o644);
    try {
      if (!(await flockFd(fd, mode, false))) {
        if (!wait) {
          throw new Error(`store ${store} is busy: ${mode === 'exclusive' ? 'a build or snapshotter commit is writing to it' : 'a gc is running on it'} (${file} is locked)`);
        }
        if (!waited) opts.onWait?.(store);
        waited = true;
        await flockFd(fd, mode, true);
      }
      if (namesSameFile(fd, file)) return fd;
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    fs.closeSync(fd);
  }
}

/** `file` is (still) the file open as `fd`. */
function namesSameFile(fd: number, file: string): boolean {
  const open = fs.fstatSync(fd);
  try {
    const now = fs.statSync(file);
    return now.ino === open.ino && now.dev === open.dev;
  } catch (err: any) {
    if (err.code === 'ENOENT') return false;
    throw err;
  }
}

function uniqueStores(stores: string[]): string[] {
  const real = (s: string) => {
    try {
      return fs.realpathSync(s);
    } catch {
      return path.resolve(s);
    }
  };
  return [...new Set(stores.map(real))].sort();
}

// ------------------------------------------------------------------------------- roots

/** The root's file name: fixed per blob path, so registering twice is one root. */
function rootName(blob: string): string {
  return crypto.createHash('sha256').update(path.resolve(blob)).digest('hex').slice(0, 32);
}

export function rootLink(store: string, blob: string): string {
  return path.join(store, ROOTS_DIR, rootName(blob));
}

/** Make the names in `dir` (a rename into it, a new entry) durable. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Make `blob` a root of `store` (durably: before its objects may be needed). The blob need not
 * exist yet. `created` is false when it already was a root.
 */
export function addRoot(store: string, blob: string): { link: string; created: boolean } {
  const target = path.resolve(blob);
  const link = rootLink(store, blob);
  if (readlinkOrNull(link) === target) return { link, created: false };
  fs.mkdirSync(path.dirname(link), { recursive: true });
  const tmp = path.join(path.dirname(link), `${TEMP_PREFIX}${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  fs.symlinkSync(target, tmp);
  try {
    fs.renameSync(tmp, link);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(path.dirname(link));
  return { link, created: true };
}

/** `blob` stops being a root of `store`. */
export function removeRoot(store: string, blob: string): void {
  fs.rmSync(rootLink(store, blob), { force: true });
}

function readlinkOrNull(p: string): string | null {
  try {
    return fs.readlinkSync(p);
  } catch (err: any) {
    if (err.code === 'ENOENT') return null;
    throw err;
  }
}

export interface Root {
  /** STORE/roots/NAME */
  link: string;
  /** The blob it keeps (absolute). */
  blob: string;
}

/** A root that could not be read (its link, or its blob's path): it may need any object. */
export interface UnreadableRoot {
  link: string;
  /** The blob, when the link itself could be read. */
  blob?: string;
  /** The error, e.g. "EACCES: permission denied, stat '/x/a.ub'". */
  reason: string;
}

export interface StoreRoots {
  /** Roots whose blob exists. */
  live: Root[];
  /** Roots whose blob is gone. */
  dangling: Root[];
  /** Roots whose link or blob path gave an error other than "no such file". */
  unreadable: UnreadableRoot[];
  /** Temp links of interrupted registrations. */
  temps: string[];
}

/** Read the roots of the stores. An entry that is not a symlink is an error (never guessed at). */
export function readRoots(stores: string[]): StoreRoots {
  const out: StoreRoots = { live: [], dangling: [], unreadable: [], temps: [] };
  for (const store of stores) {
    const dir = path.join(store, ROOTS_DIR);
    let names: string[];
    try {
      names = fs.readdirSync(dir).sort();
    } catch (err: any) {
      if (err.code === 'ENOENT') continue;
      throw err;
    }
    for (const name of names) {
      const link = path.join(dir, name);
      if (isTempName(name)) {
        out.temps.push(link);
        continue;
      }
      let blob: string | undefined;
      try {
        if (!fs.lstatSync(link).isSymbolicLink()) throw new Error(`${link}: not a symlink (a gc root is a symlink to a blob)`);
        blob = path.resolve(dir, fs.readlinkSync(link));
        (blobExists(blob) ? out.live : out.dangling).push({ link, blob });
      } catch (err: any) {
        if (typeof err.code !== 'string') throw err;
        out.unreadable.push({ link, blob, reason: err.message });
      }
    }
  }
  return out;
}

/** A root is live while it names a blob: a regular file (a directory there is no blob of ours). */
function blobExists(blob: string): boolean {
  try {
    return fs.statSync(blob).isFile();
  } catch (err: any) {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return false;
    throw err;
  }
}

/** Remove dangling roots and temp links (only under the exclusive lock: no writer is mid-registration). */
export function dropDeadRoots(roots: StoreRoots): void {
  for (const r of roots.dangling) fs.rmSync(r.link, { force: true });
  for (const t of roots.temps) fs.rmSync(t, { force: true });
}

// ------------------------------------------------------------------------------- a build's hold

export interface BuildHold {
  /** The build succeeded: let go of the lock. */
  done(): void;
  /** The build failed: take back the roots it added (and the stores it created), then let go. */
  failed(): Promise<void>;
}

/**
 * Before `cfs build` writes anything: lock the stores shared and (unless `root` is false)
 * register OUT as a root in each, so that from the first object on, a gc either waits for the
 * build or sees OUT. A root registered before its blob exists is dangling only if the build
 * dies; the next gc drops it.
 */
export async function holdStoresForBuild(stores: string[], out: string, root: boolean, onWait?: (store: string) => void): Promise<BuildHold> {
  const fresh = new Set(stores.filter((s) => !fs.existsSync(s)).map((s) => uniqueStores([s])[0]));
  const lock = await lockStores(stores, 'shared', { onWait });
  const added: string[] = [];
  try {
    if (root) for (const s of stores) if (addRoot(s, out).created) added.push(s);
  } catch (err) {
    lock.release();
    throw err;
  }
  return {
    done: () => {
      try {
        // Another build of the same OUT that failed meanwhile took back the root it had added
        // (ours found it there): name OUT again before the lock goes, gc cannot run until then.
        if (root) for (const s of stores) addRoot(s, out);
      } finally {
        lock.release();
      }
    },
    failed: async () => {
      try {
        // OUT exists: a build of the same OUT succeeded meanwhile, or ours failed after
        // publishing it; either way the root now names a complete blob that needs its objects.
        if (!blobExists(out)) for (const s of added) removeRoot(s, out);
        for (const [i, s] of lock.stores.entries()) if (fresh.has(s)) await removeIfOnlyOurs(s, lock.fds[i]);
      } finally {
        lock.release();
      }
    },
  };
}

/**
 * A store this failed build created: remove it if it holds nothing but an empty roots/ and
 * the lock file, and no one else holds or waits for its lock. `fd` is our (shared) lock on it.
 * The lock file goes only while we hold it exclusively, and only after that is the directory
 * removed; a locker that opened the file before the unlink sees it gone once it has the lock
 * and starts again (lockStore). Someone else holding the lock (another build, a gc, a shell's
 * `flock`) makes us leave the store as it is: an empty store, harmless, the next build uses it.
 */
async function removeIfOnlyOurs(store: string, fd: number): Promise<void> {
  if (!(await flockFd(fd, 'exclusive', false))) return;
  try {
    fs.rmdirSync(path.join(store, ROOTS_DIR));
  } catch { /* not empty, or absent */ }
  if (!fs.readdirSync(store).every((n) => n === LOCK_FILE)) return;
  fs.rmSync(path.join(store, LOCK_FILE), { force: true });
  fs.rmdirSync(store);
}
