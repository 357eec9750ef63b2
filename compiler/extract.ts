// `cfs extract BLOB --store DIR... DEST`: materialize the image tree as plain files.
//
// Order matters, because later steps undo earlier ones if done the other way round:
//   1. create everything (walk order: parents first); hardlinks with link(2)
//   2. lchown, then chmod (chown clears setuid/setgid; symlinks have no mode of their own)
//   3. all xattrs in ONE `setfattr -h --restore` (Node has no xattr API); after chown, because
//      chown drops security.capability, and after content, because writing drops it too
//   4. times last, since creating entries changes their directory's mtime: utimensat through the
//      addon (nanoseconds); without it Node's lutimes, which libuv cuts to microseconds.
// Paths are Buffers so names that are not UTF-8 survive. Devices and fifos come from `mknod` /
// `mkfifo`, sockets from a python3 one-liner binding an AF_UNIX socket (skipped with a warning
// when python3 is missing); these tools get an ASCII name in a staging directory inside DEST
// and the result is renamed into place, so no argv ever has to carry a non-UTF-8 path.
// Without root (as tar does for a user): files belong to the caller, device nodes and trusted.* /
// security.* xattrs are skipped, each kind named in a warning; the rest is the image's. user.*
// xattrs on other than files and directories cannot exist on Linux: skipped with a warning.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import type { Command } from 'commander';
import type { BlobReader, Inode } from '../format/decode.js';
import { Layout } from '../format/layout.js';
import { nativeSetTimes } from '../mounter/addon.js';
import { findObject } from './store.js';
import { displayName, withBlob } from './inspect.js';
import { checkStoresExist, collectStores } from './options.js';
import { makeDirs } from './mkdirs.js';
import { copySkippingHoles, skipsHoles } from './holes.js';

export interface ExtractOptions {
  /** Called for things that could not be restored but do not fail the extraction. */
  warn?: (message: string) => void;
}

export interface ExtractResult {
  inodes: number;
  dirents: number;
  /** Bytes of regular file content written. */
  bytes: number;
  /** Entries skipped (sockets without python3), as display paths. */
  skipped: string[];
}

interface Created {
  path: Buffer;
  inode: Inode;
  /** The path in the image, for messages. */
  displayPath: string;
}

/** Run a program; rejects with its stderr's first line. */
function run(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    // C locale: callers match the tools' messages (mknod's "Operation not permitted")
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['pipe', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'ENOENT' ? `${cmd} not found` : `${cmd}: ${err.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} failed: ${stderr.trim().split('\n')[0] || `exit ${code}`}`));
    });
    child.stdin.on('error', () => {}); // a failing child may close stdin early; 'close' reports it
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * DEST must not exist (it is created) or be an empty directory. Returns its absolute path and
 * whether we created it (so a failed extraction can leave things as they were).
 */
async function prepareDest(dest: string): Promise<{ abs: string; created: boolean }> {
  const abs = path.resolve(dest);
  let st;
  try {
    st = await fsp.stat(abs);
  } catch (err: any) {
    if (err.code !== 'ENOENT') throw err;
    makeDirs(abs);
    return { abs, created: true };
  }
  if (!st.isDirectory()) throw new Error(`${dest}: exists and is not a directory`);
  if ((await fsp.readdir(abs)).length > 0) throw new Error(`${dest}: directory is not empty`);
  return { abs, created: false };
}

/** After a failure: no half-written tree. DEST goes if we made it, else back to empty. */
async function undoDest(dest: { abs: string; created: boolean }): Promise<void> {
  if (dest.created) {
    await removeTree(dest.abs);
    return;
  }
  for (const name of await fsp.readdir(dest.abs)) await removeTree(path.join(dest.abs, name));
}

/**
 * rm -rf that also works where step 2 already gave directories their image modes: without root,
 * a 0555 directory's entries cannot be removed until it is made writable again, so every
 * directory is made writable first (iteratively: a tree can be ~2,000 levels deep), then removed.
 * Not a retry after a failed rm: fs.promises.rm removes siblings in parallel and rejects at the
 * first error while the others go on, so a retry would race with it.
 */
async function removeTree(p: string): Promise<void> {
  if (process.getuid?.() !== 0) {
    const dirs = [p];
    while (dirs.length > 0) {
      const dir = dirs.pop()!;
      try {
        if (!(await fsp.lstat(dir)).isDirectory()) continue;
        await fsp.chmod(dir, 0o700);
        for (const e of await fsp.readdir(dir, { withFileTypes: true })) if (e.isDirectory()) dirs.push(path.join(dir, e.name));
      } catch (err: any) {
        if (err.code !== 'ENOENT') throw err;
      }
    }
  }
  await fsp.rm(p, { recursive: true, force: true });
}

/** Without root, xattrs of these namespaces cannot be set (trusted.*: CAP_SYS_ADMIN, security.capability: CAP_SETFCAP). */
function needsPrivilege(name: string): boolean {
  return name.startsWith('trusted.') || name.startsWith('security.');
}

/** Linux's PATH_MAX: longer paths cannot be given to a system call (Node has no openat). */
const PATH_MAX = 4096;

/** A path for a one-line message: long ones keep their start and end. */
function shortPath(p: string): string {
  return p.length > 120 ? `${p.slice(0, 56)}...${p.slice(-56)}` : p;
}

/** Refuse, with a clear message, a path the kernel would refuse with ENAMETOOLONG. */
function checkPathLength(target: Buffer, shown: string): void {
  if (target.length >= PATH_MAX) {
    throw new Error(`${shortPath(shown)}: path of ${target.length} bytes under DEST exceeds PATH_MAX (${PATH_MAX}): cannot extract`);
  }
}

/** Guard: a name from the blob is one path component (the reader validated it; check anyway). */
function childPath(parent: Buffer, name: string): Buffer {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new Error(`refusing unsafe name ${JSON.stringify(name)}`);
  }
  return Buffer.concat([parent, Buffer.from('/' + name, 'latin1')]);
}

/** getfattr/setfattr quoting: any byte outside 0x21..0x7e, '\' and '=' as `\ooo` (setfattr unquotes every `\ooo`). */
export function quoteAttr(bytes: Buffer): string {
  let out = '';
  for (const b of bytes) {
    out += b < 0x21 || b > 0x7e || b === 0x5c || b === 0x3d ? '\\' + b.toString(8).padStart(3, '0') : String.fromCharCode(b);
  }
  return out;
}

/** `getfattr --dump -e hex` text for the given files, for `setfattr --restore`. */
export function restoreText(files: { path: Buffer; xattrs: Map<string, Buffer> }[]): string {
  const parts: string[] = [];
  for (const f of files) {
    if (f.xattrs.size === 0) continue;
    parts.push(`# file: ${quoteAttr(f.path)}\n`);
    for (const [name, value] of f.xattrs) parts.push(`${quoteAttr(Buffer.from(name, 'latin1'))}=0x${value.toString('hex')}\n`);
    parts.push('\n');
  }
  return parts.join('');
}

/** Seconds as a string for Node's lutimes: a negative number would mean "now", a string is taken as it is. */
function timeArg(sec: number, nsec: number): string {
  // libuv truncates to microseconds toward zero; aim half a microsecond past the wanted one so
  // the double's rounding error cannot push it into the previous microsecond.
  const micros = Math.floor(nsec / 1000);
  const t = sec + (micros * 1000 + (sec >= 0 ? 500 : -500)) / 1e9;
  return t.toFixed(7);
}

/**
 * A staging directory inside DEST for tools that get ASCII names; its name is checked against
 * the root's entries so it cannot collide with the image.
 */
class Staging {
  private dir: string | undefined;
  private n = 0;
  constructor(private readonly dest: string, private readonly reader: BlobReader) {}

  async path(): Promise<string> {
    if (this.dir === undefined) {
      let name: string;
      do name = `.cfs-extract-${crypto.randomBytes(6).toString('hex')}`;
      while (this.reader.lookup(this.reader.rootIno, name) !== undefined);
      this.dir = path.join(this.dest, name);
      await fsp.mkdir(this.dir, { mode: 0o700 });
    }
    return this.dir;
  }

  async newName(): Promise<{ dir: string; name: string; full: string }> {
    const dir = await this.path();
    const name = `n${this.n++}`;
    return { dir, name, full: path.join(dir, name) };
  }

  async remove(): Promise<void> {
    if (this.dir !== undefined) await fsp.rm(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}

let python3Missing = false;

/**
 * Create a device, fifo or socket at `target`. Returns why it was skipped (a socket without
 * python3, a device node without root: mknod needs CAP_MKNOD), or null once it is there.
 */
async function makeSpecial(staging: Staging, target: Buffer, inode: Inode, isRoot: boolean): Promise<string | null> {
  const { dir, name, full } = await staging.newName();
  switch (inode.type) {
    case 'chr':
    case 'blk':
      try {
        await run('mknod', [full, inode.type === 'chr' ? 'c' : 'b', String(inode.rdevMajor), String(inode.rdevMinor)]);
      } catch (err: any) {
        if (isRoot || !/Operation not permitted/.test(err.message)) throw err;
        return `${inode.type === 'chr' ? 'character' : 'block'} device skipped (not running as root)`;
      }
      break;
    case 'fifo':
      await run('mkfifo', [full]);
      break;
    case 'sock':
      if (python3Missing) return SOCKET_SKIPPED;
      try {
        // chdir + relative name: AF_UNIX paths are limited to 108 bytes.
        await run('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', name], { cwd: dir });
      } catch (err: any) {
        if (!/python3 not found/.test(err.message)) throw err;
        python3Missing = true;
        return SOCKET_SKIPPED;
      }
      break;
    default:
      throw new Error(`unexpected ${inode.type}`);
  }
  await fsp.rename(full, target);
  return null;
}

const SOCKET_SKIPPED = 'socket skipped (python3 not found)';

async function writeRegular(reader: BlobReader, inode: Inode, target: Buffer, stores: string[], shown: string): Promise<number> {
  if (inode.layout !== Layout.EXTERNAL) {
    const data = inode.layout === Layout.INLINE ? reader.readInline(inode.index) : Buffer.alloc(0);
    await fsp.writeFile(target, data, { flag: 'wx', mode: 0o600 });
    return data.length;
  }
  const digest = reader.digest(inode.payload);
  const object = findObject(stores, digest);
  if (object === null) throw new Error(`${shown}: object ${digest.toString('hex')} not found in any store`);
  const st = await fsp.lstat(object);
  if (st.size !== inode.size) throw new Error(`${shown}: object ${object} has ${st.size} bytes, the blob says ${inode.size}`);
  if (skipsHoles(st)) {
    // a sparse file of the image: its holes stay holes (a copy would write all their zeros)
    const fd = fs.openSync(object, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      copySkippingHoles(fd, inode.size, target, 0o600);
    } finally {
      fs.closeSync(fd);
    }
    return inode.size;
  }
  // EXCL: never write through something already there; FICLONE: share extents where the fs can.
  await fsp.copyFile(object, target, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
  return inode.size;
}

/** Materialize the blob's tree into `dest` (absent or an empty directory). */
export async function extractBlob(blobPath: string, stores: string[], dest: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const warn = opts.warn ?? ((m: string) => process.stderr.write(`cfs: warning: ${m}\n`));
  return withBlob(blobPath, async (reader) => {
    const prepared = await prepareDest(dest);
    try {
      return await materialize(reader, prepared.abs, stores, warn);
    } catch (err) {
      await undoDest(prepared).catch(() => {}); // the extraction's error is the one to report
      throw err;
    }
  });
}

/** Steps 1-4 of the header comment, into the empty directory destPath. */
async function materialize(reader: BlobReader, destPath: string, stores: string[], warn: (m: string) => void): Promise<ExtractResult> {
  const root = Buffer.from(destPath);
  const result: ExtractResult = { inodes: 0, dirents: 0, bytes: 0, skipped: [] };
  const staging = new Staging(destPath, reader);
  const dirPaths = new Map<number, Buffer>();
  const created = new Map<number, Created>(); // inode index -> first path, in creation order
  const isRoot = process.getuid?.() === 0;

  // 1. Create.
  try {
    for (const { path: entryPath, ino, inode, name, parent } of reader.walk()) {
      const shown = displayName(entryPath);
      if (entryPath === '/') {
        dirPaths.set(ino, root);
        created.set(ino, { path: root, inode, displayPath: entryPath });
        continue;
      }
      result.dirents++;
      const parentPath = dirPaths.get(parent);
      if (parentPath === undefined) throw new Error(`${shown}: parent directory not extracted`);
      const target = childPath(parentPath, name);
      checkPathLength(target, shown);
      const first = created.get(ino);
      if (first !== undefined) {
        if (inode.type === 'dir') throw new Error(`${shown}: directory reached twice`);
        await fsp.link(first.path, target);
        continue;
      }
      switch (inode.type) {
        case 'dir':
          await fsp.mkdir(target, { mode: 0o700 });
          dirPaths.set(ino, target);
          break;
        case 'reg':
          result.bytes += await writeRegular(reader, inode, target, stores, shown);
          break;
        case 'lnk':
          await fsp.symlink(Buffer.from(reader.readlink(ino), 'latin1'), target);
          break;
        default: {
          const skipped = await makeSpecial(staging, target, inode, isRoot);
          if (skipped !== null) {
            warn(`${shown}: ${skipped}`);
            result.skipped.push(shown);
            continue;
          }
        }
      }
      created.set(ino, { path: target, inode, displayPath: entryPath });
    }
  } finally {
    await staging.remove();
  }
  result.inodes = created.size;

  // 2. Owners, then modes (chown clears setuid/setgid). Without root, step 3 comes between
  // them: a user may set user.* xattrs only on what it can write, which a 0444 file or 0555
  // directory of the image is not once it has its mode.
  let warnedOwner = false;
  for (const { path: p, inode } of created.values()) {
    try {
      await fsp.lchown(p, inode.uid, inode.gid);
    } catch (err: any) {
      if (isRoot || err.code !== 'EPERM') throw err;
      if (!warnedOwner) warn('not running as root: file owners not restored');
      warnedOwner = true;
    }
  }
  if (!isRoot) await restoreXattrs(reader, created, isRoot, warn);
  for (const { path: p, inode } of created.values()) if (inode.type !== 'lnk') await fsp.chmod(p, inode.mode & 0o7777);
  if (isRoot) await restoreXattrs(reader, created, isRoot, warn);

  // 4. Times, after everything that could touch a directory's mtime: to the nanosecond through
  // the addon's utimensat where it is built, else to the microsecond (Node's lutimes).
  const setTimes = nativeSetTimes();
  for (const { path: p, inode } of created.values()) {
    if (setTimes) {
      setTimes(p, inode.mtimeSec, inode.mtimeNsec);
      continue;
    }
    const t = timeArg(inode.mtimeSec, inode.mtimeNsec);
    await fsp.lutimes(p, t, t);
  }
  return result;
}

/** 3. Xattrs, all in one setfattr run (-h: a symlink's own xattrs, never its target's). */
async function restoreXattrs(reader: BlobReader, created: Map<number, Created>, isRoot: boolean, warn: (m: string) => void): Promise<void> {
  let privileged = 0;
  const settable = (c: Created): Map<string, Buffer> => {
    const xattrs = reader.xattrs(c.inode.index);
    const kept = new Map<string, Buffer>();
    for (const [name, value] of xattrs) {
      if (!isRoot && needsPrivilege(name)) privileged++;
      // the kernel takes user.* on files and directories only (what the kernel module lists too)
      else if (name.startsWith('user.') && c.inode.type !== 'reg' && c.inode.type !== 'dir') warn(`${displayName(c.displayPath)}: xattr ${name} not restored (user.* on a ${c.inode.type})`);
      else kept.set(name, value);
    }
    return kept;
  };
  const withXattrs = [...created.values()]
    .map((c) => ({ path: c.path, xattrs: c.inode.xattrSet !== 0 ? settable(c) : new Map<string, Buffer>() }))
    .filter((f) => f.xattrs.size > 0);
  if (privileged > 0) warn(`not running as root: ${privileged} trusted.* and security.* xattr${privileged === 1 ? '' : 's'} not restored`);
  if (withXattrs.length > 0) {
    try {
      await run('setfattr', ['-h', '--restore=-'], { input: restoreText(withXattrs) });
    } catch (err: any) {
      throw new Error(`setting xattrs: ${err.message}${/not found/.test(err.message) ? ' (install the attr package)' : ''}`);
    }
  }
}

export function registerExtract(program: Command): void {
  program
    .command('extract')
    .description('materialize the image tree of a blob into DEST (absent or empty): contents, owners, modes, times, xattrs')
    .argument('<blob>')
    .argument('<dest>')
    .option('--store <dir>', 'object store (repeatable; searched in order)', collectStores, [])
    .action(async (blob: string, dest: string, o: { store: string[] }) => {
      checkStoresExist(o.store);
      await extractBlob(blob, o.store, dest);
    });
}
