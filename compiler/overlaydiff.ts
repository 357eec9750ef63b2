// An existing tree + an overlayfs-style directory diff (an upper directory) -> the new tree.
//
// This is the compiler input the snapshotter needs at Commit: containerd applied a layer tar
// into an overlay upper, and the new chain's blob is the parent's tree with that upper merged
// in. Only the upper is read: its files are hashed and stored, nothing of the parent's content
// is re-read. Overlayfs conventions:
// - a character device 0/0 is a whiteout: the name (and its subtree) disappears;
// - a directory with xattr trusted.overlay.opaque=y hides everything the parent had below it;
// - other trusted.overlay.* xattrs are overlayfs bookkeeping, never image content, except the
//   escaped trusted.overlay.overlay.X, which is the image's own trusted.overlay.X (nested overlays);
// - a renamed directory (redirect_dir=on: trusted.overlay.redirect, a name in the same directory
//   or an absolute path) takes its entries from the parent's directory at the path it came from;
//   a metadata-only copy-up (metacopy=on: trusted.overlay.metacopy, after a chown or chmod) takes
//   its content from the parent's file at its origin (its own redirect, or its directory's origin
//   plus its name): nothing of it is read or hashed. Origins are looked up in the parent as it was
//   before any of the upper is applied, as the kernel looks them up in the lower layers;
// - what an upper cannot say on its own is refused, never guessed: a metacopy file whose data is
//   not in the parent, a file hardlinked from outside the upper (index=on keeps a link under the
//   workdir), bookkeeping of the other kind than the one said (overlayXattrs). Every writable
//   mount we make pins index off (OVERLAY_MOUNT_OPTIONS in mounter/mount.ts), whatever the
//   kernel's defaults;
// - an overlay mounted from a user namespace (userxattr) writes user.overlay.* where one mounted
//   by the host's root writes trusted.overlay.*: `overlayXattrs: 'user'` reads its upper.
// Everything else in the upper replaces what the parent had under that name (directories are
// merged: their metadata comes from the upper, their children from both). Hardlinks inside the
// upper stay hardlinks (one TreeNode). With `whiteouts: false` the directory is taken literally,
// trusted.overlay.* xattrs included (a bind-mounted first layer, or `cfs build --rootfs`: no
// overlay wrote it, so a 0/0 device is a device and those xattrs are the tree's own).
// The walk uses synchronous calls: per file, fs.promises costs several threadpool round trips
// and promises, more than the kernel work; the hashing and writing happen on the store's thread.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import {
  S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, newDir, type TreeNode,
} from '../format/tree.js';
import { MEMORY_OBJECT_LIMIT, hashBuffer, hashFile, type StoreWriter } from './store.js';
import { displayName } from './inspect.js';
import { abbreviate, displayPath } from './layers.js';
import { hashFileSkippingHoles, piecesSkippingHoles, skipsHoles } from './holes.js';

export const OPAQUE_XATTR = 'trusted.overlay.opaque';

/**
 * Where the overlay that wrote an upper kept its bookkeeping: trusted.overlay.* (mounted by the
 * host's root), or user.overlay.* (`userxattr`: mounted from a user namespace, a rootless
 * container; such a mount makes no redirects or metacopy files, only whiteouts and opaque
 * directories). The other namespace's overlay names in an upper are refused: they would be
 * bookkeeping of a mount we were not told about.
 */
export type OverlayXattrs = 'trusted' | 'user';

interface Bookkeeping {
  /** trusted.overlay. or user.overlay. */
  prefix: string;
  /** An image's own <prefix>X, escaped by the overlay that wrote the upper. */
  escaped: string;
  opaque: string;
  redirect: string;
  metacopy: string;
  /** The bookkeeping names of the other namespace, refused. */
  foreign: Set<string>;
}

/** What an overlay writes under its prefix (Documentation/filesystems/overlayfs.rst). */
const OVERLAY_NAMES = ['opaque', 'redirect', 'metacopy', 'origin', 'impure', 'nlink', 'upper', 'uuid', 'whiteout', 'whiteouts'];

function bookkeeping(ns: OverlayXattrs): Bookkeeping {
  const prefix = `${ns}.overlay.`;
  const other = ns === 'trusted' ? 'user' : 'trusted';
  return {
    prefix,
    escaped: `${prefix}overlay.`,
    opaque: `${prefix}opaque`,
    redirect: `${prefix}redirect`,
    metacopy: `${prefix}metacopy`,
    foreign: new Set(OVERLAY_NAMES.map((n) => `${other}.overlay.${n}`)),
  };
}

export interface OverlayDiffOptions {
  /** Regular files of 1..inlineThreshold bytes are inlined. */
  inlineThreshold: number;
  /** Where new contents go; null only hashes. */
  store: StoreWriter | null;
  /** Interpret whiteouts and opaque directories (default true). */
  whiteouts?: boolean;
  /** Which xattrs hold the overlay's bookkeeping (default trusted: a mount by the host's root). */
  overlayXattrs?: OverlayXattrs;
  /**
   * Store contents of CLONE_MIN bytes or more by cloning the files into a store on their
   * filesystem where it can (StoreWriter.putClone: XFS with reflink, btrfs; CLONE_WINDOW at a
   * time), else as usual. For a tree that stays (cfs build --rootfs --reflink); not for an upper
   * about to be removed: a clone forces the file's dirty pages to disk and is then read back
   * from there to be hashed, where a copy reads the page cache.
   */
  clone?: boolean;
  /**
   * The upper was written through a uid/gid mapping (a container in its own user namespace): its
   * ids are host ids, turned back into the image's here (owners, ACL entries, v3 capability root
   * ids); null for an id outside the mapping, which is refused.
   */
  unmap?: IdUnmap;
}

export interface IdUnmap {
  uid: (hostId: number) => number | null;
  gid: (hostId: number) => number | null;
}

const ACL_XATTRS = new Set(['system.posix_acl_access', 'system.posix_acl_default']);
const ACL_USER = 0x02;
const ACL_GROUP = 0x08;
const VFS_CAP_V3 = 0x03000000;

/**
 * An xattr value with the ids inside it passed through `unmap` (POSIX ACL named users and groups,
 * a v3 file capability's root id); the value itself when it holds none. Throws with `where` and
 * the id when one is outside the mapping.
 */
export function unmapXattrIds(name: string, value: Buffer, unmap: IdUnmap, where: string): Buffer {
  const back = (fn: (id: number) => number | null, id: number, what: string): number => {
    const v = fn(id);
    if (v === null) throw new Error(`${where}: ${name} names ${what} ${id}, outside the snapshot's mapping: cannot be committed`);
    return v;
  };
  if (ACL_XATTRS.has(name) && value.length >= 4 && value.readUInt32LE(0) === 2) {
    const out = Buffer.from(value);
    for (let off = 4; off + 8 <= out.length; off += 8) {
      const tag = out.readUInt16LE(off);
      if (tag === ACL_USER) out.writeUInt32LE(back(unmap.uid, out.readUInt32LE(off + 4), 'uid'), off + 4);
      else if (tag === ACL_GROUP) out.writeUInt32LE(back(unmap.gid, out.readUInt32LE(off + 4), 'gid'), off + 4);
    }
    return out;
  }
  if (name === 'security.capability' && value.length >= 24 && (value.readUInt32LE(0) & 0xff000000) === VFS_CAP_V3) {
    const out = Buffer.from(value);
    out.writeUInt32LE(back(unmap.uid, out.readUInt32LE(20), 'root uid'), 20);
    return out;
  }
  return value;
}

export interface OverlayDiffStats {
  /** Entries of the upper directory visited (its root excluded). */
  entries: number;
  /** Whiteouts applied and opaque directories seen. */
  whiteouts: number;
  opaques: number;
  /** Regular files, and the bytes of those read (all but metadata-only copy-ups). */
  files: number;
  fileBytes: number;
  /** Metadata-only copy-ups: content taken from the parent. */
  metacopies: number;
  /** Disk usage of the upper (st_blocks * 512, each inode once) and its inode count. */
  diskBytes: number;
  inodes: number;
}

/** getfattr's `\ooo` escapes -> the raw byte string. */
function unquoteGetfattr(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Every xattr under `dir` (all namespaces, symlinks not followed), from one getfattr run.
 * Keys are paths relative to `dir` as binary strings ("" is `dir` itself).
 */
export async function readXattrs(dir: string): Promise<Map<string, Map<string, Buffer>>> {
  const text: string = await new Promise((resolve, reject) => {
    execFile(
      'getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '.'],
      { cwd: dir, encoding: 'latin1', maxBuffer: 1 << 30 },
      (err, stdout, stderr) => {
        // getfattr exits 1 when some file has no xattr support; the output is still complete.
        if (err && (err as any).code !== 1) reject(new Error(`getfattr in ${dir}: ${stderr || err.message}`));
        else resolve(stdout);
      },
    );
  });
  const out = new Map<string, Map<string, Buffer>>();
  let cur: Map<string, Buffer> | null = null;
  for (const line of text.split('\n')) {
    if (line === '') { cur = null; continue; }
    if (line.startsWith('# file: ')) {
      let p = unquoteGetfattr(line.slice(8));
      p = p === '.' ? '' : p.startsWith('./') ? p.slice(2) : p;
      cur = new Map();
      out.set(p, cur);
      continue;
    }
    if (!cur) continue;
    const eq = line.indexOf('=');
    const name = unquoteGetfattr(eq < 0 ? line : line.slice(0, eq));
    const raw = eq < 0 ? '' : line.slice(eq + 1);
    let value: Buffer;
    if (raw.startsWith('0x')) value = Buffer.from(raw.slice(2), 'hex');
    else if (raw.startsWith('"') && raw.endsWith('"')) value = Buffer.from(unquoteGetfattr(raw.slice(1, -1)), 'latin1');
    else value = Buffer.alloc(0);
    cur.set(name, value);
  }
  return out;
}

function splitNs(ns: bigint): [number, number] {
  let sec = ns / 1_000_000_000n;
  let nsec = ns - sec * 1_000_000_000n;
  if (nsec < 0n) { sec -= 1n; nsec += 1_000_000_000n; }
  return [Number(sec), Number(nsec)];
}

function major(rdev: bigint): number {
  return Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
}

function minor(rdev: bigint): number {
  return Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
}

/** Clones in flight at once (OverlayDiffOptions.clone), on libuv's threadpool. */
const CLONE_WINDOW = 8;
/**
 * Smaller files are copied even with `clone`: a clone is dear in metadata (XFS: ~0.3 ms of
 * system time per file here, refcount btree and log), a small copy is cheap.
 */
const CLONE_MIN = 256 << 10;

/**
 * A regular file's content as a clone in the store (StoreWriter.putClone); false where its
 * device cannot clone (only the first try on a device can say so).
 */
async function cloneContent(store: StoreWriter, abs: Buffer, st: fs.BigIntStats, node: TreeNode): Promise<boolean> {
  const c = await store.putClone(abs, Number(st.dev));
  if (!c) return false;
  if (c.size !== Number(st.size)) throw new Error(`${abs.toString()}: changed while being read`);
  node.digest = c.digest;
  return true;
}

async function fileContent(abs: Buffer, st: fs.BigIntStats, node: TreeNode, opts: OverlayDiffOptions): Promise<void> {
  const size = Number(st.size);
  if (size === 0) return;
  if (size >= CLONE_MIN && opts.clone && opts.store && await cloneContent(opts.store, abs, st, node)) {
    // cloned (the first file of its device, alone: the walk overlaps the next ones)
  } else if (size <= opts.inlineThreshold) {
    node.inline = fs.readFileSync(abs);
  } else if (size <= MEMORY_OBJECT_LIMIT) {
    const body = fs.readFileSync(abs);
    node.digest = opts.store ? await opts.store.putBuffer(body) : hashBuffer(body);
  } else if (skipsHoles(st)) {
    // a sparse file written in the container: its holes are neither read nor stored
    const fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      node.digest = opts.store ? await opts.store.putStream(piecesSkippingHoles(fd, size), size) : hashFileSkippingHoles(fd, size);
    } finally {
      fs.closeSync(fd);
    }
  } else {
    node.digest = opts.store
      ? await opts.store.putStream(fs.createReadStream(abs, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>, size)
      : await hashFile(abs.toString('latin1'));
  }
  const got = node.inline?.length;
  if (got !== undefined && got !== size) throw new Error(`${abs.toString()}: changed while being read`);
}

/** The node at relative path `p` ('' is the root) of a tree, through directories only. */
function lookupPath(root: TreeNode, p: string): TreeNode | undefined {
  let node: TreeNode | undefined = root;
  if (p === '') return node;
  for (const name of p.split('/')) {
    if (!node || (node.mode & S_IFMT) !== S_IFDIR) return undefined;
    node = node.children!.get(name);
  }
  return node;
}

/**
 * A copy of directory `dir` whose directories are copies too (the other nodes shared): what a
 * renamed directory brings to its new path, independent of what the upper then does at the
 * old one (a new directory there, entries whited out).
 */
function copyDirs(dir: TreeNode): TreeNode {
  const children = new Map<string, TreeNode>();
  for (const [name, child] of dir.children!) children.set(name, (child.mode & S_IFMT) === S_IFDIR ? copyDirs(child) : child);
  return { ...dir, xattrs: new Map(dir.xattrs), children };
}

/** What resolveOrigins found, by upper path; null: nothing there in the parent. */
interface Origins {
  /** Renamed directories: a copy of the parent's directory they came from. */
  dirs: Map<string, TreeNode | null>;
  /** Metadata-only copy-ups: the parent's node at their origin (its content is taken). */
  files: Map<string, TreeNode | null>;
}

/**
 * Where every renamed directory and metadata-only copy-up of the upper came from, looked up in
 * `tree` before anything of the upper is applied. An upper entry's origin is its redirect when
 * absolute, else its directory's origin plus its redirect (a name) or its own name: the lookup
 * overlayfs makes in the lower layers. Redirects the kernel refuses to follow (the root, an
 * ancestor of the entry: EINVAL, ESTALE) are refused here too.
 */
function resolveOrigins(tree: TreeNode, xattrs: Map<string, Map<string, Buffer>>, shownPath: (rel: string) => string, bk: Bookkeeping): Origins {
  // null: no origin (below an opaque directory, or a directory that has none, a relative name
  // finds nothing in the lower layers, as overlayfs's lookup finds nothing there)
  const paths = new Map<string, string | null>();
  const originPath = (rel: string): string | null => {
    if (rel === '') return '';
    let p = paths.get(rel);
    if (p !== undefined) return p;
    const slash = rel.lastIndexOf('/');
    const name = rel.slice(slash + 1);
    const redirect = xattrs.get(rel)?.get(bk.redirect)?.toString('latin1');
    if (redirect !== undefined && redirect.includes('\0')) throw new Error(`${shownPath(rel)}: overlay redirect ${JSON.stringify(redirect)} holds a NUL byte`);
    if (redirect !== undefined && redirect.startsWith('/')) {
      const parts = redirect.split('/').filter((c) => c !== '');
      if (parts.some((c) => c === '.' || c === '..')) throw new Error(`${shownPath(rel)}: overlay redirect ${JSON.stringify(redirect)} is not a plain path`);
      p = parts.join('/');
      if (p === '' || rel.startsWith(`${p}/`)) throw new Error(`${shownPath(rel)}: overlay redirect ${JSON.stringify(redirect)} names the root or an ancestor of the entry`);
    } else {
      if (redirect !== undefined && (redirect === '' || redirect === '.' || redirect === '..' || redirect.includes('/'))) {
        throw new Error(`${shownPath(rel)}: overlay redirect ${JSON.stringify(redirect)} is not a name`);
      }
      const parentRel = slash < 0 ? '' : rel.slice(0, slash);
      // (overlayfs takes no opaque mark on the root: its lower entries always show)
      const opaqueParent = parentRel !== '' && xattrs.get(parentRel)?.get(bk.opaque)?.toString('latin1') === 'y';
      const dir = opaqueParent ? null : originPath(parentRel);
      p = dir === null ? null : (dir === '' ? '' : `${dir}/`) + (redirect ?? name);
    }
    paths.set(rel, p);
    return p;
  };
  const out: Origins = { dirs: new Map(), files: new Map() };
  for (const [rel, names] of xattrs) {
    if (rel === '' || !(names.has(bk.redirect) || names.has(bk.metacopy))) continue;
    const from = originPath(rel);
    const node = from === null ? undefined : lookupPath(tree, from);
    // which map is used depends on what the upper entry is (a metacopy mark on a directory,
    // which overlayfs never writes, makes it nothing but a plain merged directory)
    if (names.has(bk.metacopy)) out.files.set(rel, node ?? null);
    if (names.has(bk.redirect)) out.dirs.set(rel, node && (node.mode & S_IFMT) === S_IFDIR ? copyDirs(node) : null);
  }
  return out;
}

/** A metadata-only copy-up's content: its origin's, which must be a regular file of its size. */
function metacopyContent(node: TreeNode, origin: TreeNode | null, shown: string): void {
  if (!origin || (origin.mode & S_IFMT) !== S_IFREG || origin.size !== node.size) {
    throw new Error(`${shown}: a metadata-only copy-up (overlay metacopy=on) whose data is not in the parent: cannot be compiled`);
  }
  if (origin.inline) node.inline = origin.inline;
  if (origin.digest) node.digest = origin.digest;
}

/**
 * Merge the upper directory `upperDir` into `tree` (mutated in place) with overlayfs semantics.
 * The root's own metadata is taken from the upper's root.
 */
export async function applyOverlayDiff(tree: TreeNode, upperDir: string, opts: OverlayDiffOptions): Promise<OverlayDiffStats> {
  const whiteouts = opts.whiteouts ?? true;
  const bk = bookkeeping(opts.overlayXattrs ?? 'trusted');
  const stats: OverlayDiffStats = { entries: 0, whiteouts: 0, opaques: 0, files: 0, fileBytes: 0, metacopies: 0, diskBytes: 0, inodes: 0 };
  // trusted.* xattrs are invisible without CAP_SYS_ADMIN: opaque directories would read as plain ones
  if (whiteouts && bk.prefix === 'trusted.overlay.' && !hasCapSysAdmin()) {
    throw new Error(`${upperDir}: reading an overlay upper needs root (CAP_SYS_ADMIN): its trusted.overlay.* xattrs are hidden from others (an upper of a userxattr mount: --userxattr)`);
  }
  const xattrs = await readXattrs(upperDir);
  const seen = new Map<string, TreeNode>(); // dev:ino -> node, for hardlinks and disk usage
  const linksSeen = new Map<string, { names: number; nlink: bigint; rel: string }>(); // dev:ino of non-directories with nlink > 1
  const base = Buffer.from(upperDir.replace(/\/+$/, ''));
  const shownPath = (rel: string): string => abbreviate(displayName(`${base.toString('latin1')}${rel === '' ? '' : '/'}${rel}`));

  const xattrsOf = (rel: string): Map<string, Buffer> => {
    const all = xattrs.get(rel);
    const out = new Map<string, Buffer>();
    if (!all) return out;
    const names = [...all.keys()];
    if (whiteouts) {
      for (const name of names) {
        if (!bk.foreign.has(name)) continue;
        throw new Error(bk.prefix === 'trusted.overlay.'
          ? `${shownPath(rel)}: ${name}: the upper of an overlay mounted with userxattr (a user namespace's): compile it with --userxattr`
          : `${shownPath(rel)}: ${name}: bookkeeping of an overlay mounted by the host's root, in an upper said to be a userxattr mount's`);
      }
    }
    const kept: [string, Buffer][] = [];
    for (const name of names) {
      if (!whiteouts || !name.startsWith(bk.prefix)) kept.push([name, all.get(name)!]);
      else if (name.startsWith(bk.escaped)) kept.push([bk.prefix + name.slice(bk.escaped.length), all.get(name)!]);
    }
    kept.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [name, value] of kept) out.set(name, value);
    return out;
  };

  const unmapped = (fn: (id: number) => number | null, id: number, what: string, rel: string): number => {
    const v = fn(id);
    if (v === null) throw new Error(`${shownPath(rel)}: ${what} ${id} is outside the snapshot's mapping: cannot be committed`);
    return v;
  };
  const metadata = (node: TreeNode, st: fs.BigIntStats, rel: string) => {
    node.mode = Number(st.mode);
    node.uid = Number(st.uid);
    node.gid = Number(st.gid);
    [node.mtimeSec, node.mtimeNsec] = splitNs(st.mtimeNs);
    node.xattrs = xattrsOf(rel);
    const unmap = opts.unmap;
    if (unmap) {
      node.uid = unmapped(unmap.uid, node.uid, 'owner', rel);
      node.gid = unmapped(unmap.gid, node.gid, 'group', rel);
      for (const [name, value] of node.xattrs) node.xattrs.set(name, unmapXattrIds(name, value, unmap, shownPath(rel)));
    }
  };

  const origins: Origins = whiteouts ? resolveOrigins(tree, xattrs, shownPath, bk) : { dirs: new Map(), files: new Map() };
  const metacopyOrigins = new Map<string, TreeNode | null>(); // dev:ino -> origin of a hardlinked metacopy file

  async function visitDir(dirNode: TreeNode, abs: Buffer, rel: string): Promise<void> {
    const names = fs.readdirSync(abs, { encoding: 'buffer' });
    names.sort(Buffer.compare);
    for (const nameBuf of names) {
      const name = nameBuf.toString('latin1');
      const childAbs = Buffer.concat([abs, Buffer.from('/'), nameBuf]);
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const st = fs.lstatSync(childAbs, { bigint: true });
      stats.entries++;
      const inoKey = `${st.dev}:${st.ino}`;
      if (!seen.has(inoKey)) {
        stats.inodes++;
        stats.diskBytes += Number(st.blocks) * 512;
      }
      const type = Number(st.mode) & S_IFMT;
      if (whiteouts && type === S_IFCHR && st.rdev === 0n) {
        dirNode.children!.delete(name);
        stats.whiteouts++;
        continue;
      }
      if (type === S_IFDIR) {
        let node = dirNode.children!.get(name);
        const opaque = whiteouts && xattrs.get(childRel)?.get(bk.opaque)?.toString('latin1') === 'y';
        const origin = origins.dirs.get(childRel);
        if (!opaque && origin !== undefined) {
          // renamed here: the entries of the directory it came from (none if that is gone)
          node = origin ?? newDir();
          dirNode.children!.set(name, node);
        } else if (opaque || !node || (node.mode & S_IFMT) !== S_IFDIR) {
          // a new node: an opaque directory must not empty one that was renamed elsewhere
          node = newDir();
          dirNode.children!.set(name, node);
        }
        if (opaque) stats.opaques++;
        metadata(node, st, childRel);
        node.size = 0;
        seen.set(inoKey, node);
        await visitDir(node, childAbs, childRel);
        continue;
      }
      // Non-directories: a new inode, unless it is a hardlink to one already seen in the upper.
      if (st.nlink > 1n) {
        const links = linksSeen.get(inoKey);
        if (links) links.names++;
        else linksSeen.set(inoKey, { names: 1, nlink: st.nlink, rel: childRel });
      }
      const linked = st.nlink > 1n ? seen.get(inoKey) : undefined;
      if (linked) {
        // one inode, one content: names of a metadata-only copy-up must share their origin
        if (whiteouts && metacopyOrigins.has(inoKey) && (origins.files.get(childRel) ?? null) !== metacopyOrigins.get(inoKey)) {
          throw new Error(`${shownPath(childRel)}: hardlinked metadata-only copy-ups (overlay metacopy=on) with different origins: cannot be compiled`);
        }
        dirNode.children!.set(name, linked);
        continue;
      }
      const node: TreeNode = { mode: 0, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, xattrs: new Map(), size: 0 };
      metadata(node, st, childRel);
      switch (type) {
        case S_IFREG:
          node.size = Number(st.size);
          stats.files++;
          if (whiteouts && xattrs.get(childRel)?.has(bk.metacopy)) {
            const origin = origins.files.get(childRel) ?? null;
            metacopyContent(node, origin, shownPath(childRel));
            if (st.nlink > 1n) metacopyOrigins.set(inoKey, origin);
            stats.metacopies++;
            break;
          }
          stats.fileBytes += node.size;
          if (opts.clone && opts.store && node.size >= CLONE_MIN && opts.store.canClone(Number(st.dev)) === true) {
            // clones overlap (each waits on the disk: FICLONE, then reading the clone back)
            if (cloning.length >= CLONE_WINDOW) await cloning.shift();
            const p = cloneContent(opts.store, childAbs, st, node).then((cloned) => {
              if (!cloned) throw new Error(`${childAbs.toString()}: its filesystem stopped cloning`); // putClone copies instead, never null here
            });
            p.catch(() => {}); // awaited later (shift or allSettled); not an unhandled rejection meanwhile
            cloning.push(p);
          } else {
            await fileContent(childAbs, st, node, opts);
          }
          break;
        case S_IFLNK: {
          const t = fs.readlinkSync(childAbs, { encoding: 'buffer' }).toString('latin1');
          node.target = t;
          node.size = t.length;
          break;
        }
        case S_IFCHR:
        case S_IFBLK:
          node.rdevMajor = major(st.rdev);
          node.rdevMinor = minor(st.rdev);
          break;
        case S_IFIFO:
        case S_IFSOCK:
          break;
        default:
          throw new Error(`${childAbs.toString()}: unknown file type`);
      }
      seen.set(inoKey, node);
      dirNode.children!.set(name, node);
    }
  }

  const rootSt = fs.lstatSync(base, { bigint: true });
  if (!rootSt.isDirectory()) throw new Error(`${upperDir}: not a directory`);
  // an opaque mark on the upper's root is not one to overlayfs (the lower's entries show): none here
  metadata(tree, rootSt, '');
  tree.mode = S_IFDIR | (tree.mode & 0o7777);
  const cloning: Promise<void>[] = [];
  try {
    try {
      await visitDir(tree, base, '');
    } finally {
      // every clone settled before an error goes up (their temp files are removed by then)
      const settled = await Promise.allSettled(cloning);
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    }
  } catch (err: any) {
    // a system call's error names the whole path, which an upper can make longer than PATH_MAX
    if (typeof err?.path === 'string' && typeof err?.code === 'string') {
      throw new Error(`${abbreviate(displayPath(Buffer.from(err.path).toString('latin1')))}: ${String(err.message).split(',')[0]}`);
    }
    throw err;
  }
  if (whiteouts) {
    for (const links of linksSeen.values()) {
      if (BigInt(links.names) < links.nlink) {
        throw new Error(`${shownPath(links.rel)}: has ${links.nlink} links, ${links.names} in the upper (hardlinked from outside it, as overlay index=on does): cannot be compiled from the upper alone`);
      }
    }
  }
  return stats;
}

/** CAP_SYS_ADMIN (bit 21) in this process's effective set, from /proc/self/status. */
function hasCapSysAdmin(): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'latin1'));
  return m !== null && (BigInt('0x' + m[1]) & (1n << 21n)) !== 0n;
}
