// OCI layer semantics: applies a layer's tar entries, in order, onto the in-memory merged tree.
//
// Rules (image-spec "layer" chapter, with choices where it is silent):
// - Paths: "./" prefixes, repeated and trailing slashes are dropped; absolute paths are
//   confined to the root (leading '/' stripped); a ".." component is refused.
//   A symlink among the intermediate components is followed inside the image, as containerd
//   and umoci resolve an entry's parent (securejoin: absolute targets from the image's root,
//   ".." never above it): the tree is the image, so nothing outside it is ever reached. Any
//   other non-directory there is an error. The entry's own name is never followed.
// - Missing parent directories are created implicitly as 0755 root:root, mtime 0, no xattrs
//   (the same for every build, so blobs stay reproducible); a later entry for that directory
//   sets its real metadata.
// - `.wh.NAME` removes NAME (and its subtree) coming from lower layers; what this layer itself
//   put there stays (whiteouts only apply to lower layers). `.wh..wh..opq` makes its directory
//   opaque: everything from lower layers below it disappears, whatever this layer added before
//   or after the marker stays. Other `.wh..wh.*` names are aufs metadata and are ignored.
//   Whiteout entries never appear in the tree.
// - A repeated entry: the last one wins. A regular file (or symlink, device, fifo) entry always
//   creates a new inode under its name, so earlier hardlinks to the old inode keep the old
//   content (what tar and umoci do). A directory entry over a directory updates its metadata
//   and keeps its children; any non-directory over a directory removes the subtree.
// - A hardlink names the inode its target path has in the merged tree at that moment (target
//   in this or an earlier layer). A target that does not exist or is a directory is an error.
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, newDir, type TreeNode } from '../format/tree.js';
import { TarReader, type BodyPiece, type TarEntry } from './tar.js';
import { MEMORY_OBJECT_LIMIT, hashBuffer, keepDigest, newVerityHasher, type StoreWriter } from './store.js';
import { BlobError } from '../format/decode.js';

export const DEFAULT_INLINE_THRESHOLD = 64;
export const MAX_INLINE_THRESHOLD = 4096;

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
const MAX_NAME = 255;
const MAX_SYMLINK = 4095;
const MAX_XATTR_NAME = 255;
const MAX_XATTR_VALUE = 65536;
const MAX_XATTRS = 65535;
const MAX_ID = 0xffffffff;

/** An error in one layer, optionally at one entry: "<layer>: <entry>: <what>" on one line. */
export class LayerError extends Error {
  constructor(readonly layer: string, readonly entry: string | undefined, readonly what: string) {
    super([layer, entry === undefined ? undefined : abbreviate(displayPath(entry)), oneLine(what)].filter((s) => s !== undefined && s !== '').join(': '));
    this.name = 'LayerError';
  }
}

/** A problem with one entry; applyLayerStream adds the layer and entry path. */
class EntryError extends Error {}

/** An entry path for a message: a hostile one may be megabytes long (PAX), keep both ends. */
/** A path for a one-line message: a long one keeps its two ends. */
export function abbreviate(p: string): string {
  return p.length > 200 ? `${p.slice(0, 96)}...${p.slice(-96)}` : p;
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}

/** A binary-string path for messages: UTF-8 text if it is valid, control and invalid bytes as \xHH. */
export function displayPath(p: string): string {
  const bytes = Buffer.from(p, 'latin1');
  const text = bytes.toString('utf8');
  const source = Buffer.from(text, 'utf8').equals(bytes) ? text : p.replace(/[\x80-\xff]/g, (c) => `\\x${c.charCodeAt(0).toString(16)}`);
  return source.replace(/[\x00-\x1f\x7f\\]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export interface LayerStats {
  /** Tar entries processed (all layers so far). */
  entries: number;
}

export interface LayerContext {
  /** Short layer id used in error messages (e.g. the first 12 hex digits of its digest). */
  layer: string;
  /** Regular files of 1..inlineThreshold bytes are inlined into the blob. */
  inlineThreshold: number;
  /** Where file contents go; null computes digests without storing anything. */
  store: StoreWriter | null;
  stats: LayerStats;
  /** Called after each entry (keep it cheap). */
  onEntry?: () => void;
  /**
   * A layer's entry for the root directory ("./"): 'apply' its metadata to the image's root, as
   * umoci and docker do (the default), or 'ignore' it, as containerd's applier does ("resolved
   * to root"): the snapshotter's images must show containers what containerd's own snapshotters
   * show them (a layer made with `tar -C dir .` by a user would otherwise make / 0700 of that user).
   */
  rootEntries?: 'apply' | 'ignore';
}

/** An empty merged tree: the root directory (0755 root:root, mtime 0 until a layer sets it). */
export function newTree(): TreeNode {
  return newDir(0o755, 0, 0);
}

/** Names created, replaced or passed through in the current layer, per directory. */
type Touched = Map<TreeNode, Set<string>>;

function touch(touched: Touched, dir: TreeNode, name: string): void {
  let s = touched.get(dir);
  if (!s) touched.set(dir, (s = new Set()));
  s.add(name);
}

/**
 * Split a tar path into components: drops "", "." and leading "/"; refuses "..", NUL and
 * names longer than 255 bytes. [] is the root.
 */
export function splitPath(p: string): string[] {
  const out: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') throw new EntryError('path contains a ".." component (refused)');
    if (c.includes('\0')) throw new EntryError('path contains a NUL byte');
    out.push(c);
  }
  // The last name may be a whiteout of a name of up to MAX_NAME bytes: ".wh." is not part of it.
  for (let i = 0; i < out.length; i++) {
    const c = out[i];
    const limit = i === out.length - 1 && c.startsWith(WHITEOUT_PREFIX) ? MAX_NAME + WHITEOUT_PREFIX.length : MAX_NAME;
    if (c.length > limit) throw new EntryError(`path component longer than ${MAX_NAME} bytes`);
  }
  return out;
}

function isDir(n: TreeNode): boolean {
  return (n.mode & 0o170000) === S_IFDIR;
}

/** Symlinks followed while resolving one path, as the kernel's ELOOP limit. */
const MAX_SYMLINKS = 40;

/**
 * The directory holding the last of `comps`, resolved as containerd and umoci resolve a layer
 * entry's parent (securejoin): a symlink on the way is followed inside the image, an absolute
 * target from the image's root and ".." never above it. The tree is the image, so nothing
 * outside it can be reached, and a layer writing through a lower layer's link (`bin/app` over
 * `bin -> usr/bin`) lands where every runtime puts it. With `touched` (an entry of the layer),
 * missing directories are created (0755 root:root, as implicit ones) and every directory
 * passed becomes this layer's; a file on the way is an error. Without it (a whiteout, a
 * hardlink's target) nothing is created or touched, and a missing directory or a file on the
 * way answers null: below them there is nothing to remove or link to.
 */
function resolveParent(root: TreeNode, comps: string[], touched: Touched | null): TreeNode | null {
  let dir = root;
  let i = 0;
  // The common case, a path without symlinks, walks `comps` in place; at the first symlink the
  // rest becomes a stack of components (the link's target first) and a stack of directories.
  for (; i < comps.length - 1; i++) {
    const next = step(dir, comps[i], touched);
    if (next === null) return null;
    if (next === LINK) break;
    dir = next;
  }
  if (i === comps.length - 1) return dir;
  const todo = comps.slice(i, comps.length - 1).reverse();
  const dirs = pathTo(root, comps.slice(0, i));
  let links = 0;
  while (todo.length > 0) {
    const c = todo.pop()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (dirs.length > 1) dirs.pop();
      continue;
    }
    const at = dirs[dirs.length - 1];
    const next = step(at, c, touched);
    if (next === null) return null;
    if (next !== LINK) {
      dirs.push(next);
      continue;
    }
    if (++links > MAX_SYMLINKS) throw new EntryError('too many levels of symbolic links on the path');
    const target = at.children!.get(c)!.target!;
    if (target.startsWith('/')) dirs.length = 1;
    const parts = target.split('/');
    for (let k = parts.length - 1; k >= 0; k--) todo.push(parts[k]);
  }
  return dirs[dirs.length - 1];
}

const LINK = Symbol('symlink');

/** One component of resolveParent: the child directory, LINK for a symlink, or null (see there). */
function step(dir: TreeNode, c: string, touched: Touched | null): TreeNode | typeof LINK | null {
  let child = dir.children!.get(c);
  if (child && (child.mode & 0o170000) === S_IFLNK) return LINK;
  if (!child) {
    if (!touched) return null;
    // a name from a symlink's target was not checked by splitPath
    if (c.length > MAX_NAME) throw new EntryError(`path component longer than ${MAX_NAME} bytes`);
    child = newDir(0o755, 0, 0);
    dir.children!.set(c, child);
  } else if (!isDir(child)) {
    if (!touched) return null;
    throw new EntryError(`${abbreviate(displayPath(c))} is not a directory`);
  }
  if (touched) touch(touched, dir, c);
  return child;
}

/** The directories from the root down `comps` (all existing directories: walked already). */
function pathTo(root: TreeNode, comps: string[]): TreeNode[] {
  const dirs = [root];
  for (const c of comps) dirs.push(dirs[dirs.length - 1].children!.get(c)!);
  return dirs;
}

function checkId(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > MAX_ID) throw new EntryError(`${what} ${v} out of range (0..${MAX_ID})`);
  return v;
}

function checkXattrs(x: Map<string, Buffer>): Map<string, Buffer> {
  if (x.size > MAX_XATTRS) throw new EntryError(`more than ${MAX_XATTRS} xattrs`);
  for (const [name, value] of x) {
    if (name.length === 0 || name.length > MAX_XATTR_NAME || name.includes('\0')) {
      throw new EntryError(`invalid xattr name ${JSON.stringify(displayPath(name))}`);
    }
    if (value.length > MAX_XATTR_VALUE) throw new EntryError(`xattr ${displayPath(name)} value longer than ${MAX_XATTR_VALUE} bytes`);
  }
  return x;
}

/** A new inode with the entry's metadata (type bits given, permission bits from the header). */
function nodeFor(e: TarEntry, typeBits: number): TreeNode {
  return {
    mode: typeBits | (e.mode & 0o7777),
    uid: checkId(e.uid, 'uid'),
    gid: checkId(e.gid, 'gid'),
    mtimeSec: e.mtimeSec,
    mtimeNsec: e.mtimeNsec,
    xattrs: checkXattrs(e.xattrs),
    size: 0,
  };
}

function setDirMetadata(dir: TreeNode, e: TarEntry): void {
  dir.mode = S_IFDIR | (e.mode & 0o7777);
  dir.uid = checkId(e.uid, 'uid');
  dir.gid = checkId(e.gid, 'gid');
  dir.mtimeSec = e.mtimeSec;
  dir.mtimeNsec = e.mtimeNsec;
  dir.xattrs = checkXattrs(e.xattrs);
}

async function digestChunks(chunks: AsyncIterable<BodyPiece>): Promise<Buffer> {
  const h = newVerityHasher();
  for await (const c of chunks) {
    if (typeof c === 'number') h.updateZeros(c);
    else h.update(c);
  }
  return keepDigest(h.digest());
}

/** A regular file inode; its content is inlined, stored, or (size 0) nothing. */
async function regularFile(e: TarEntry, reader: TarReader, ctx: LayerContext): Promise<TreeNode> {
  const node = nodeFor(e, S_IFREG);
  node.size = e.size;
  if (e.size === 0) return node;
  if (e.size <= ctx.inlineThreshold) {
    // Copy: the body may be a view into a large decompressed chunk we must not keep alive.
    node.inline = Buffer.from(await reader.readBody());
  } else if (e.size <= MEMORY_OBJECT_LIMIT) {
    const body = await reader.readBody();
    node.digest = ctx.store ? await ctx.store.putBuffer(body) : hashBuffer(body);
  } else {
    node.digest = ctx.store ? await ctx.store.putStream(reader.bodyChunks(), e.size) : await digestChunks(reader.bodyChunks());
  }
  return node;
}

/** regularFile() when the body is buffered and the store takes it now; else undefined, nothing read. */
function regularFileSync(e: TarEntry, reader: TarReader, ctx: LayerContext): TreeNode | undefined {
  const stored = e.size > ctx.inlineThreshold;
  if (e.size > MEMORY_OBJECT_LIMIT || (stored && ctx.store && !ctx.store.canPutSync(e.size))) return undefined;
  const body = e.size === 0 ? undefined : reader.readBodySync();
  if (e.size !== 0 && body === undefined) return undefined;
  const node = nodeFor(e, S_IFREG);
  node.size = e.size;
  if (body === undefined) return node;
  // Copy an inline body: it is a view into a large decompressed chunk we must not keep alive.
  if (!stored) node.inline = Buffer.from(body);
  else node.digest = ctx.store ? ctx.store.putBufferSync(body) : hashBuffer(body);
  return node;
}

function symlink(e: TarEntry): TreeNode {
  const t = e.linkpath;
  if (t.length === 0) throw new EntryError('symlink with an empty target');
  if (t.length > MAX_SYMLINK) throw new EntryError(`symlink target longer than ${MAX_SYMLINK} bytes`);
  if (t.includes('\0')) throw new EntryError('symlink target contains a NUL byte');
  const node = nodeFor(e, S_IFLNK);
  // symlink(2) always creates 0777 and Linux ignores a symlink's mode, so every unpacker (tar,
  // umoci, containerd) shows 0777 whatever the archive says; the blob says the same.
  node.mode = S_IFLNK | 0o777;
  node.target = t;
  node.size = t.length;
  return node;
}

function device(e: TarEntry, typeBits: number): TreeNode {
  // The blob stores rdev in Linux's 32-bit encoding: 12-bit major, 20-bit minor.
  if (!(e.devmajor >= 0 && e.devmajor < 1 << 12)) throw new EntryError(`device major ${e.devmajor} out of range`);
  if (!(e.devminor >= 0 && e.devminor < 1 << 20)) throw new EntryError(`device minor ${e.devminor} out of range`);
  const node = nodeFor(e, typeBits);
  node.rdevMajor = e.devmajor;
  node.rdevMinor = e.devminor;
  return node;
}

function hardlinkTarget(root: TreeNode, e: TarEntry, entryComps: string[]): TreeNode {
  const comps = splitPath(e.linkpath);
  if (comps.length === 0) throw new EntryError('hardlink to the root directory');
  // The runtimes remove what is at the entry's path before they link: a target at or below it
  // is gone by then (ENOENT). Refused, not linked to what the path held before.
  if (comps.length >= entryComps.length && entryComps.every((c, i) => comps[i] === c)) {
    throw new EntryError(`hardlink target ${abbreviate(displayPath(e.linkpath))} is the entry itself or below it`);
  }
  const parent = resolveParent(root, comps, null);
  const target = parent?.children!.get(comps[comps.length - 1]);
  if (!target) throw new EntryError(`hardlink target ${abbreviate(displayPath(e.linkpath))} does not exist`);
  if (isDir(target)) throw new EntryError(`hardlink target ${abbreviate(displayPath(e.linkpath))} is a directory`);
  return target;
}

/** Remove below `dir` everything this layer did not create or pass through (opaque marker). */
function pruneLower(dir: TreeNode, touched: Touched): void {
  const mine = touched.get(dir);
  for (const [name, child] of dir.children!) {
    if (!mine?.has(name)) dir.children!.delete(name);
    else if (isDir(child)) pruneLower(child, touched);
  }
}

function applyWhiteout(parent: TreeNode, name: string, touched: Touched): void {
  if (name === OPAQUE_MARKER) {
    pruneLower(parent, touched);
    return;
  }
  const victim = name.slice(WHITEOUT_PREFIX.length);
  if (victim.startsWith(WHITEOUT_PREFIX)) return; // .wh..wh.plnk, .wh..wh.aufs: aufs metadata
  if (victim === '' || victim === '.' || victim === '..') throw new EntryError('invalid whiteout name');
  const child = parent.children!.get(victim);
  if (!child) return;
  if (!touched.get(parent)?.has(victim)) parent.children!.delete(victim);
  // The layer also put something at that name: keep it, but hide what lower layers had below.
  else if (isDir(child)) pruneLower(child, touched);
}

/** Put `node` under `name` in `parent`, as this layer's. */
function place(parent: TreeNode, name: string, node: TreeNode, touched: Touched): void {
  parent.children!.set(name, node);
  touch(touched, parent, name);
}

/**
 * Apply one entry (its body, if any, is read from `reader`). Returns a promise only when it
 * had to wait (a body not buffered yet, a full store queue): most entries cost none.
 */
function applyEntry(root: TreeNode, e: TarEntry, reader: TarReader, ctx: LayerContext, touched: Touched): Promise<void> | undefined {
  const comps = splitPath(e.path);
  if (comps.length === 0) {
    if (ctx.rootEntries === 'ignore') return; // its body, if any, is skipped by the reader
    if (e.type !== 'dir') throw new EntryError('the root must be a directory');
    setDirMetadata(root, e);
    return;
  }
  const name = comps[comps.length - 1];
  if (name.startsWith(WHITEOUT_PREFIX)) {
    const dir = resolveParent(root, comps, null);
    if (dir) applyWhiteout(dir, name, touched);
    return;
  }
  const parent = resolveParent(root, comps, touched)!;
  const existing = parent.children!.get(name);
  let node: TreeNode;
  switch (e.type) {
    case 'dir':
      if (existing && isDir(existing)) {
        setDirMetadata(existing, e);
        touch(touched, parent, name);
        return;
      }
      node = nodeFor(e, S_IFDIR);
      node.children = new Map();
      break;
    case 'file': {
      const file = regularFileSync(e, reader, ctx);
      if (file === undefined) return regularFile(e, reader, ctx).then((n) => place(parent, name, n, touched));
      node = file;
      break;
    }
    case 'symlink': node = symlink(e); break;
    case 'hardlink': node = hardlinkTarget(root, e, comps); break;
    case 'chr': node = device(e, S_IFCHR); break;
    case 'blk': node = device(e, S_IFBLK); break;
    case 'fifo': node = nodeFor(e, S_IFIFO); break;
  }
  place(parent, name, node, touched);
  return undefined;
}

/**
 * Apply one layer, given as an uncompressed tar stream, onto `tree` (mutated in place).
 * Errors are LayerErrors naming ctx.layer and the entry. The stream is read to its end.
 */
export async function applyLayerStream(tree: TreeNode, tar: AsyncIterable<Buffer>, ctx: LayerContext): Promise<void> {
  const reader = new TarReader(tar);
  const touched: Touched = new Map();
  let entry: TarEntry | null = null;
  let previous: string | undefined; // names where a header that cannot be read sits
  try {
    for (;;) {
      previous = entry?.path ?? previous;
      entry = null; // an error while reading a header belongs to no entry
      if (!(entry = reader.nextSync() ?? (await reader.next()))) break;
      const waiting = applyEntry(tree, entry, reader, ctx, touched);
      if (waiting) await waiting;
      ctx.stats.entries++;
      ctx.onEntry?.();
    }
  } catch (err: any) {
    if (err instanceof LayerError) throw err;
    if (err instanceof BlobError && entry) {
      // the tree's own blob (a lazily opened parent) is corrupt, not the layer: keep the error
      // the blob's, and say what reached it
      err.message += ` (reached by layer ${ctx.layer}, entry ${abbreviate(displayPath(entry.path))})`;
      throw err;
    }
    const what = err?.message ?? String(err);
    if (entry) throw new LayerError(ctx.layer, entry.path, what);
    const where = previous === undefined ? 'the first header' : `the header after ${abbreviate(displayPath(previous))}`;
    throw new LayerError(ctx.layer, undefined, `${where}: ${what}`);
  }
}
