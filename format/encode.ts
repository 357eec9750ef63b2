// Tree -> blob (format/SPEC.md). The output is a pure function of the tree and the inline
// threshold: everything without a natural order is sorted by bytes, nothing depends on Map
// insertion order, and hardlinks are recognised by TreeNode identity.
//
// The encoder works in passes over flat arrays so a million inodes cost a few seconds and no
// per-entry Buffers: (1) breadth-first numbering and validation, (2) placement of every
// payload (DATA items, digests, xattr sets, directory data), (3) one zero-filled allocation
// of the whole blob, written in place through a DataView, (4) section and header CRCs.

import { crc32c } from './crc32c.js';
import {
  BLOCK_SIZE, BLOCK_SIZE_LOG2, DEFAULT_INLINE_THRESHOLD, DIGEST_SIZE, DIR_CHUNK_SIZE, DIRENT, DIRENT_SIZE, HDR,
  HEADER_SIZE, INO, INODE_SIZE, INODES_PER_PAGE, Layout, MAGIC, MAX_MTIME_SEC, MIN_MTIME_SEC, MTIME_SEC_BITS, MAX_DEV_MAJOR, MAX_DIR_BYTES, MAX_DEV_MINOR, MAX_INLINE_SIZE, MAX_INODES, MAX_NAME_LEN, MAX_NSEC,
  MAX_SYMLINK_LEN, MAX_XATTR_NAME_LEN, MAX_XATTR_OVERLAY_NAME_LEN, MAX_XATTR_SET_ENTRIES, MAX_XATTR_VALUE_LEN, SEC, SECTION_COUNT,
  SECTION_ENTRY_SIZE, SECTION_TABLE_OFFSET, SectionId, VERSION_MAJOR, VERSION_MINOR, XATTR_ENTRY_HEADER_SIZE,
  XATTR_OVERLAY_PREFIX, XATTR_PREFIXES, XATTR_SET_SIZE, XENT, XSET, dtypeOfMode, encodeDev, inodesSectionSize, roundUpToBlock,
} from './layout.js';
import { lazyBlobOf } from './lazy.js';
import { encodeLazy } from './reencode.js';
import { S_IFMT, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK, type TreeNode } from './tree.js';

export interface EncodeOptions {
  /** Regular files of 1..inlineThreshold bytes may carry `inline` content (default 64, at most 4096). */
  inlineThreshold?: number;
  /**
   * Called at most once per blob with a one-line message when mtimes outside the format's
   * range (SPEC §4, years 1697..2242) were clamped to it. Default: silent.
   */
  warn?: (message: string) => void;
}

/** Thrown for a tree that cannot be encoded; the message names the offending path. */
export class EncodeError extends Error {
  override name = 'EncodeError';
}

const TWO32 = 0x1_0000_0000;

/** A binary string holds one byte per char; anything above 0xff cannot be a byte. */
const NON_BYTE = /[^\x00-\xff]/;

interface XattrSetPlan {
  /** Sorted full names. */
  names: string[];
  values: Buffer[];
  /** Bytes in XATTR_DATA. */
  size: number;
  offset: number;
}

/**
 * Encode a merged tree into a blob. `root` must be a directory. Hardlinks are the same
 * TreeNode object under several names; a directory reached twice is an error (cycle).
 * Ignored fields: `size` of anything but regular files and symlinks, rdev of non-devices,
 * `digest`/`inline` of an empty regular file (it is stored as an empty file).
 */
export function encodeBlob(root: TreeNode, opts: EncodeOptions = {}): Buffer {
  const threshold = opts.inlineThreshold ?? DEFAULT_INLINE_THRESHOLD;
  if (!Number.isInteger(threshold) || threshold < 0 || threshold > MAX_INLINE_SIZE) {
    throw new EncodeError(`inlineThreshold must be an integer in 0..${MAX_INLINE_SIZE}, got ${threshold}`);
  }
  if (!root || typeof root !== 'object' || (root.mode & S_IFMT) !== S_IFDIR) {
    throw new EncodeError('root must be a directory');
  }
  // A tree over a parent blob (openLazyTree): what the changes did not reach is copied.
  const lazy = lazyBlobOf(root);
  if (lazy !== undefined) return encodeLazy(root, lazy, threshold, opts);

  // ---- Pass 1: breadth-first numbering, children in byte order, validation. ----
  // Typed arrays sized from a first count: a million pushes into a dozen growing arrays, and
  // the garbage their regrowth leaves, cost more than counting the children once.
  const bound = countEntries(root) + 1;
  const nodes: TreeNode[] = [root];
  const indexOf = new Map<TreeNode, number>([[root, 0]]);
  const nlink = new Uint32Array(bound);
  const parent = new Uint32Array(bound);
  // Where each inode was first reached, to name it in error messages without storing paths.
  const firstParent = new Int32Array(bound);
  firstParent[0] = -1;
  const firstName: string[] = [''];
  // Directory entries of all directories, flat; a directory's run is [entryStart, entryEnd).
  const entryStart = new Uint32Array(bound);
  const entryEnd = new Uint32Array(bound);
  const entryName: string[] = [];
  const entryIno = new Uint32Array(bound);
  let direntCount = 0;

  const pathOf = (i: number): string => {
    const parts: string[] = [];
    for (let at = i; at > 0; at = firstParent[at]) parts.push(firstName[at]);
    return '/' + parts.reverse().join('/');
  };

  for (let head = 0; head < nodes.length; head++) {
    const node = nodes[head];
    const problem = nodeProblem(node, threshold);
    if (problem !== null) throw new EncodeError(`${pathOf(head)}: ${problem}`);
    entryStart[head] = direntCount;
    if ((node.mode & S_IFMT) === S_IFDIR) {
      let subdirs = 0;
      const children = node.children;
      if (children !== undefined) {
        const names = checkedNames(children, head, pathOf);
        for (const name of names) {
          const child = children.get(name)!;
          const isDir = (child.mode & S_IFMT) === S_IFDIR;
          let idx = indexOf.get(child);
          if (idx === undefined) {
            idx = nodes.length;
            if (idx >= MAX_INODES) throw new EncodeError(`too many inodes (limit ${MAX_INODES})`);
            nodes.push(child);
            indexOf.set(child, idx);
            if (isDir) parent[idx] = head;
            firstParent[idx] = head;
            firstName.push(name);
          } else if (isDir) {
            throw new EncodeError(
              `${joinPath(pathOf(head), name)}: directory reached twice (cycle or hardlinked directory; first at ${pathOf(idx)})`,
            );
          }
          if (isDir) subdirs++;
          nlink[idx]++;
          entryName.push(name);
          entryIno[direntCount++] = idx;
        }
      }
      nlink[head] = 2 + subdirs;
    } else if (node.children !== undefined && node.children.size > 0) {
      throw new EncodeError(`${pathOf(head)}: only directories have children`);
    }
    entryEnd[head] = direntCount;
  }
  const inodeCount = nodes.length;

  // ---- Pass 2: place payloads. ----
  const plan = newPayloadPlan(inodeCount);
  const { layout, payload, dirLen, xattrSetOf } = plan;
  // DIGESTS: the external files' inodes, sorted and indexed afterwards (placeDigests).
  const external: number[] = [];
  const dirBytesOf = (i: number) => dirDataLength(entryName, entryStart[i], entryEnd[i]);
  for (let i = 0; i < inodeCount; i++) {
    if (placeNodePayload(plan, i, nodes[i], dirBytesOf, pathOf)) external.push(i);
  }
  const { data, xattrSets, dirCount, dataBytes } = plan;

  const dirsSize = placeDirs(dirLen, payload);

  const digests = placeDigests(nodes, external, payload);

  // ---- Pass 3: allocate and write. ----
  const out = allocateBlob(inodeCount, dirCount, dirsSize, data, digests.length, xattrSets);
  const { blob, view } = out;

  // INODES: 85 to a page, the page's last 16 bytes left zero.
  const clamped = { count: 0, first: -1 };
  for (let i = 0; i < inodeCount; i++) {
    const o = out.inodeAt(i);
    if (!writeNodeInode(view, o, nodes[i], layout[i], nlink[i], xattrSetOf[i], parent[i], payload[i], dirLen[i]) && clamped.count++ === 0) clamped.first = i;
  }
  warnClamped(opts, clamped, () => pathOf(clamped.first), () => nodes[clamped.first].mtimeSec);

  // DIRS
  const dtypeOf = (child: number) => dtypeOfMode(nodes[child].mode);
  for (let i = 0; i < inodeCount; i++) {
    if (layout[i] !== Layout.DIR || dirLen[i] === 0) continue;
    writeDirEntries(out, i, payload[i], dirLen[i], entryName, entryIno, entryStart[i], entryEnd[i], dtypeOf);
  }

  // DATA, DIGESTS, XATTR_INDEX, XATTR_DATA
  data.write(out);
  const digestsAt = out.sectionAt[SectionId.DIGESTS];
  for (let k = 0; k < digests.length; k++) blob.set(digests[k], digestsAt + k * DIGEST_SIZE);
  xattrSets.write(out);

  // ---- Pass 4: header and checksums. ----
  sealBlob(out, threshold, inodeCount, direntCount, dataBytes);
  return blob;
}

// ---------------------------------------------------------------------------------------------
// Pieces shared with the incremental re-encoder (format/reencode.ts), which must write exactly
// the bytes encodeBlob writes.

/** DATA (SPEC §6): items in order of first use, deduplicated by bytes, never crossing a page. */
export class DataPlan {
  private readonly offsetOf = new Map<string, number>();
  readonly items: string[] = [];
  readonly offsets: number[] = [];
  size = 0;

  /** Offset of the item with these bytes (a binary string), placed now if it is new. */
  place(bytes: string): number {
    let off = this.offsetOf.get(bytes);
    if (off === undefined) {
      if ((this.size % BLOCK_SIZE) + bytes.length > BLOCK_SIZE) this.size = roundUpToBlock(this.size);
      off = this.size;
      this.size += bytes.length;
      this.offsetOf.set(bytes, off);
      this.items.push(bytes);
      this.offsets.push(off);
    }
    return off;
  }

  write(out: BlobOut): void {
    const at = out.sectionAt[SectionId.DATA];
    for (let k = 0; k < this.items.length; k++) out.blob.write(this.items[k], at + this.offsets[k], 'latin1');
  }
}

/** XATTR_INDEX and XATTR_DATA (SPEC §8): sets deduplicated by content, in order of first use. */
export class XattrPlan {
  private readonly indexOf = new Map<string, number>();
  readonly sets: XattrSetPlan[] = [];
  dataSize = 0;
  entryCount = 0;

  /** The 1-based index of this set (added if new), or what is wrong with it. */
  add(xattrs: Map<string, Buffer>): number | string {
    const names = [...xattrs.keys()].sort();
    let key = '';
    let size = 0;
    for (const name of names) {
      const value = xattrs.get(name)!;
      const xattrIssue = xattrProblem(name, value);
      if (xattrIssue !== null) return `xattr ${JSON.stringify(name)}: ${xattrIssue}`;
      // Length-prefixed so distinct sets never produce the same key (names hold no NUL).
      key += `${name}\0${value.length}\0${value.toString('latin1')}`;
      size += XATTR_ENTRY_HEADER_SIZE + name.length - XATTR_PREFIXES[prefixIdOf(name)].length + value.length;
    }
    if (names.length > MAX_XATTR_SET_ENTRIES) return `more than ${MAX_XATTR_SET_ENTRIES} xattrs`;
    if (size >= TWO32) return 'xattrs larger than 4 GiB';
    let setIndex = this.indexOf.get(key);
    if (setIndex === undefined) {
      setIndex = this.sets.length + 1;
      if (setIndex > 0xffffffff) throw new EncodeError('too many xattr sets');
      this.indexOf.set(key, setIndex);
      this.sets.push({ names, values: names.map((n) => xattrs.get(n)!), size, offset: this.dataSize });
      this.dataSize += size;
      this.entryCount += names.length;
    }
    return setIndex;
  }

  write(out: BlobOut): void {
    const { blob, view } = out;
    const xindexAt = out.sectionAt[SectionId.XATTR_INDEX];
    const xdataAt = out.sectionAt[SectionId.XATTR_DATA];
    for (let s = 0; s < this.sets.length; s++) {
      const set = this.sets[s];
      const r = xindexAt + s * XATTR_SET_SIZE;
      writeU64(view, r + XSET.offset, set.offset);
      view.setUint32(r + XSET.size, set.size, true);
      view.setUint16(r + XSET.count, set.names.length, true);
      let at = xdataAt + set.offset;
      for (let k = 0; k < set.names.length; k++) {
        const name = set.names[k];
        const value = set.values[k];
        const prefixId = prefixIdOf(name);
        const suffix = name.slice(XATTR_PREFIXES[prefixId].length);
        blob[at + XENT.prefix] = prefixId;
        blob[at + XENT.suffixLen] = suffix.length;
        view.setUint32(at + XENT.valueLen, value.length, true);
        at += XATTR_ENTRY_HEADER_SIZE;
        at += blob.write(suffix, at, 'latin1');
        blob.set(value, at);
        at += value.length;
      }
    }
  }
}

/** Pass 2's results: per inode, and the sections' plans. */
export interface PayloadPlan {
  layout: Uint8Array;
  payload: Float64Array;
  /** Directories: bytes of their data in DIRS, which is also their size (placeDirs places them). */
  dirLen: Float64Array;
  xattrSetOf: Uint32Array;
  data: DataPlan;
  xattrSets: XattrPlan;
  dirCount: number;
  dataBytes: number;
}

export function newPayloadPlan(inodeCount: number): PayloadPlan {
  return {
    layout: new Uint8Array(inodeCount), payload: new Float64Array(inodeCount), dirLen: new Float64Array(inodeCount),
    xattrSetOf: new Uint32Array(inodeCount), data: new DataPlan(), xattrSets: new XattrPlan(), dirCount: 0, dataBytes: 0,
  };
}

/**
 * Pass 2 for inode i, which has a TreeNode: its layout, its DATA item, its directory length
 * (dirBytesOf(i), asked of directories only) and its xattr set. True for an EXTERNAL file,
 * whose digest the caller places.
 */
export function placeNodePayload(
  plan: PayloadPlan, i: number, node: TreeNode, dirBytesOf: (i: number) => number, pathOf: (i: number) => string,
): boolean {
  let external = false;
  switch (node.mode & S_IFMT) {
    case S_IFREG:
      plan.dataBytes += node.size;
      if (node.size === 0) {
        plan.layout[i] = Layout.NONE;
      } else if (node.inline !== undefined) {
        plan.layout[i] = Layout.INLINE;
        plan.payload[i] = plan.data.place(node.inline.toString('latin1'));
      } else {
        plan.layout[i] = Layout.EXTERNAL;
        external = true;
      }
      break;
    case S_IFLNK:
      plan.layout[i] = Layout.INLINE;
      plan.payload[i] = plan.data.place(node.target!);
      break;
    case S_IFDIR: {
      plan.layout[i] = Layout.DIR;
      const len = dirBytesOf(i);
      if (len > MAX_DIR_BYTES) throw new EncodeError(`${pathOf(i)}: directory data of ${len} bytes exceeds ${MAX_DIR_BYTES}`);
      // An empty directory has no data; its payload is written as 0.
      plan.dirLen[i] = len;
      if (len > 0) plan.dirCount++;
      break;
    }
    default:
      plan.layout[i] = Layout.NONE;
  }
  const xattrs = node.xattrs;
  if (xattrs !== undefined && xattrs.size > 0) {
    const set = plan.xattrSets.add(xattrs);
    if (typeof set === 'string') throw new EncodeError(`${pathOf(i)}: ${set}`);
    plan.xattrSetOf[i] = set;
  }
  return external;
}

/** The blob being written: one zero-filled allocation, sections placed. */
export interface BlobOut {
  blob: Buffer;
  view: DataView;
  blobSize: number;
  sectionAt: number[];
  sectionSize: number[];
  sectionCount: number[];
  /** The blob as 32-bit words (Buffer.alloc of a blob's size is never a pool slice: aligned). */
  words: Uint32Array | null;
  /** Byte offset in the blob of inode record i. */
  inodeAt(i: number): number;
}

export function allocateBlob(inodeCount: number, dirCount: number, dirsSize: number, data: DataPlan, digestCount: number, xattrs: XattrPlan): BlobOut {
  const sectionSize = [
    inodesSectionSize(inodeCount),
    dirsSize,
    data.size,
    digestCount * DIGEST_SIZE,
    xattrs.sets.length * XATTR_SET_SIZE,
    xattrs.dataSize,
  ];
  const sectionCount = [inodeCount, dirCount, data.items.length, digestCount, xattrs.sets.length, xattrs.entryCount];
  const sectionAt: number[] = [];
  let blobSize = BLOCK_SIZE;
  for (let id = 0; id < SECTION_COUNT; id++) {
    sectionAt.push(blobSize);
    blobSize += roundUpToBlock(sectionSize[id]);
  }
  if (blobSize > Number.MAX_SAFE_INTEGER || blobSize > 0x7fffffffffff) throw new EncodeError('blob too large');
  const blob = Buffer.alloc(blobSize);
  // DataView's little-endian setters: several times cheaper per field than Buffer's writeUInt32LE
  const view = new DataView(blob.buffer, blob.byteOffset, blob.length);
  const inodesAt = sectionAt[SectionId.INODES];
  // 85 to a page, the page's last 16 bytes left zero
  const inodeAt = (i: number) => inodesAt + Math.floor(i / INODES_PER_PAGE) * BLOCK_SIZE + (i % INODES_PER_PAGE) * INODE_SIZE;
  const words = blob.byteOffset % 4 === 0 ? new Uint32Array(blob.buffer, blob.byteOffset, blob.length >>> 2) : null;
  return { blob, view, blobSize, sectionAt, sectionSize, sectionCount, words, inodeAt };
}

/** Write a node's inode record at `o`; false when its mtime had to be clamped. */
export function writeNodeInode(
  view: DataView, o: number, node: TreeNode, layout: number, nlink: number, xattrSet: number, parent: number, payload: number, dirLen: number,
): boolean {
  const type = node.mode & S_IFMT;
  view.setUint16(o + INO.mode, node.mode, true);
  view.setUint8(o + INO.layout, layout);
  view.setUint32(o + INO.nlink, nlink, true);
  view.setUint32(o + INO.uid, node.uid, true);
  view.setUint32(o + INO.gid, node.gid, true);
  let size = 0;
  if (type === S_IFREG) size = node.size;
  else if (type === S_IFLNK) size = node.target!.length;
  else if (type === S_IFDIR) size = dirLen;
  writeU64(view, o + INO.size, size);
  const inRange = writeMtime(view, o + INO.mtime, node.mtimeSec, node.mtimeNsec);
  view.setUint32(o + INO.xattrSet, xattrSet, true);
  let aux = 0;
  if (type === S_IFCHR || type === S_IFBLK) aux = encodeDev(node.rdevMajor ?? 0, node.rdevMinor ?? 0);
  else if (type === S_IFDIR) aux = parent;
  view.setUint32(o + INO.aux, aux, true);
  writeU64(view, o + INO.payload, payload);
  return inRange;
}

export function warnClamped(opts: EncodeOptions, clamped: { count: number; first: number }, pathOf: () => string, secOf: () => number): void {
  if (clamped.count === 0) return;
  opts.warn?.(
    `${clamped.count} mtime(s) outside ${MIN_MTIME_SEC}..${MAX_MTIME_SEC} s (years 1697..2242) were clamped ` +
      `to that range (first: ${pathOf()} at ${secOf()} s)`,
  );
}

/**
 * A directory's data from its entries [e, end) of the flat arrays. Chunk c is at
 * payload + c * 4096; chunks are filled greedily, the same way dirDataLength counted them, so
 * the last one ends exactly at payload + size.
 */
export function writeDirEntries(
  out: BlobOut, dir: number, payload: number, size: number, entryName: string[], entryIno: Uint32Array, e: number, end: number,
  dtypeOf: (child: number) => number,
): void {
  const { blob, view } = out;
  const dirsAt = out.sectionAt[SectionId.DIRS];
  let chunkAt = dirsAt + payload;
  while (e < end) {
    // Take as many entries as fit, then write headers and names.
    let n = 0;
    let used = 0;
    while (e + n < end && used + DIRENT_SIZE + entryName[e + n].length <= DIR_CHUNK_SIZE) {
      used += DIRENT_SIZE + entryName[e + n].length;
      n++;
    }
    let nameAt = n * DIRENT_SIZE;
    for (let k = 0; k < n; k++) {
      const d = chunkAt + k * DIRENT_SIZE;
      const child = entryIno[e + k];
      view.setUint32(d + DIRENT.ino, child, true);
      view.setUint16(d + DIRENT.nameoff, nameAt, true);
      blob[d + DIRENT.fileType] = dtypeOf(child);
      nameAt += blob.write(entryName[e + k], chunkAt + nameAt, 'latin1');
    }
    e += n;
    if (e === end && chunkAt + nameAt !== dirsAt + payload + size) {
      throw new Error(`internal error: directory inode ${dir} data does not end at payload + size`);
    }
    chunkAt += DIR_CHUNK_SIZE;
  }
}

/** Header fields, section table and checksums: the last step of writing a blob. */
export function sealBlob(out: BlobOut, threshold: number, inodeCount: number, direntCount: number, dataBytes: number): void {
  const { blob, view } = out;
  blob.set(MAGIC, HDR.magic);
  blob.writeUInt16LE(VERSION_MAJOR, HDR.versionMajor);
  blob.writeUInt16LE(VERSION_MINOR, HDR.versionMinor);
  blob.writeUInt32LE(HEADER_SIZE, HDR.headerSize);
  blob.writeUInt32LE(BLOCK_SIZE_LOG2, HDR.blockSizeLog2);
  blob.writeUInt32LE(threshold, HDR.inlineThreshold);
  writeU64(view, HDR.blobSize, out.blobSize);
  writeU64(view, HDR.rootIno, 0);
  writeU64(view, HDR.inodeCount, inodeCount);
  writeU64(view, HDR.direntCount, direntCount);
  writeU64(view, HDR.dataBytes, dataBytes);
  for (let id = 0; id < SECTION_COUNT; id++) {
    const e = SECTION_TABLE_OFFSET + id * SECTION_ENTRY_SIZE;
    const off = out.sectionAt[id];
    writeU64(view, e + SEC.offset, off);
    writeU64(view, e + SEC.size, out.sectionSize[id]);
    writeU64(view, e + SEC.count, out.sectionCount[id]);
    blob.writeUInt32LE(crc32c(blob.subarray(off, off + out.sectionSize[id])), e + SEC.crc);
  }
  blob.writeUInt32LE(crc32c(blob.subarray(0, HEADER_SIZE)), HDR.headerCrc);
}

/**
 * The number of directory entries in the tree, each directory counted once however often it is
 * reached (pass 1 rejects that): a bound of the dirent count, and of the inode count less the root.
 * Directories for which `skip` is true are not counted nor entered (the re-encoder's unopened ones).
 */
export function countEntries(root: TreeNode, skip?: (dir: TreeNode) => boolean): number {
  let entries = 0;
  const seen = new Set<TreeNode>();
  const dirs = [root];
  while (dirs.length > 0) {
    const dir = dirs.pop()!;
    if (seen.has(dir)) continue;
    seen.add(dir);
    if (skip?.(dir)) continue;
    const children = dir.children;
    if (!(children instanceof Map)) continue;
    entries += children.size;
    for (const child of children.values()) {
      if (child && typeof child === 'object' && (child.mode & S_IFMT) === S_IFDIR) dirs.push(child);
    }
  }
  return entries;
}

/**
 * DIRS bytes (= size) of a directory whose entries are [start, end) (SPEC §5): the entries are packed
 * greedily into chunks of at most 4096 bytes (dirents, then names); every chunk but the last is
 * padded to 4096 bytes, the last ends right after its last name. 0 for an empty directory.
 */
export function dirDataLength(names: string[], start: number, end: number): number {
  if (start === end) return 0;
  let chunks = 1;
  let used = 0;
  for (let e = start; e < end; e++) {
    const need = DIRENT_SIZE + names[e].length;
    if (used + need > DIR_CHUNK_SIZE) {
      chunks++;
      used = 0;
    }
    used += need;
  }
  return (chunks - 1) * DIR_CHUNK_SIZE + used;
}

/**
 * DIGESTS (SPEC §7): the distinct digests of the `external` inodes in memcmp order; sets each
 * one's payload to the index of its digest. Each file's sort key packs the leading bits of its
 * digest above its position in `external` into one double (exact below 2^53), so a native
 * numeric sort, with no comparator call per comparison, puts the digests in memcmp order of
 * those bits; only runs that share them (identical contents, and rare prefix collisions) are
 * then compared whole. A comparator sort was two thirds of the encoder's time for a million files.
 */
function placeDigests(nodes: TreeNode[], external: number[], payload: Float64Array): Buffer[] {
  const n = external.length;
  const digestOf = (k: number) => nodes[external[k]].digest!;
  const positionBits = Math.max(1, Math.ceil(Math.log2(n + 1)));
  const leadingBits = 53 - positionBits; // at least 21: MAX_INODES < 2^32
  const positions = 2 ** positionBits;
  const drop = leadingBits >= 48 ? 1 : 2 ** (48 - leadingBits);
  const keys = new Float64Array(n);
  for (let k = 0; k < n; k++) keys[k] = Math.floor(digestOf(k).readUIntBE(0, 6) / drop) * positions + k;
  keys.sort();
  const order = new Uint32Array(n);
  for (let j = 0; j < n; j++) order[j] = keys[j] % positions;
  for (let start = 0; start < n; ) {
    const lead = Math.floor(keys[start] / positions);
    let end = start + 1;
    while (end < n && Math.floor(keys[end] / positions) === lead) end++;
    if (end - start > 1) sortRunByDigest(order.subarray(start, end), digestOf);
    start = end;
  }
  const digests: Buffer[] = [];
  for (let j = 0; j < n; j++) {
    const k = order[j];
    // Sorted, so a repeated digest is the one just before it; keys[j] still holds the leading
    // bits of the digest now at j (sortRunByDigest reorders only within equal leading bits).
    const repeated = j > 0 && Math.floor(keys[j] / positions) === Math.floor(keys[j - 1] / positions) &&
      digestOf(order[j - 1]).equals(digestOf(k));
    if (!repeated) digests.push(digestOf(k));
    payload[external[k]] = digests.length - 1;
  }
  return digests;
}

/** Puts a run of files whose digests share their leading bits in memcmp order of the whole digest. */
function sortRunByDigest(run: Uint32Array, digestOf: (k: number) => Buffer): void {
  const first = digestOf(run[0]);
  let same = true;
  for (let j = 1; j < run.length && same; j++) same = first.equals(digestOf(run[j]));
  if (!same) run.sort((a, b) => Buffer.compare(digestOf(a), digestOf(b)) || a - b);
}

/**
 * DIRS placement (SPEC §5), directories taken in inode order: one of more than 4096 bytes
 * starts on a new page after the last one; one of at most 4096 bytes goes right after the used
 * part of the first page that still has room for it (first fit), else on a new page. Sets
 * payload[i] of every directory with data and returns the DIRS size.
 *
 * The first fit is found in O(log pages) with a max-tree over the pages' unused tails.
 */
export function placeDirs(dirLen: Float64Array, payload: Float64Array): number {
  let bound = 0;
  for (const len of dirLen) bound += Math.ceil(len / BLOCK_SIZE);
  let leaves = 1;
  while (leaves < bound) leaves *= 2;
  const room = new Int32Array(2 * leaves); // leaf leaves + p: unused tail of page p (0 until opened)
  const setRoom = (p: number, bytes: number) => {
    let at = leaves + p;
    room[at] = bytes;
    for (at >>= 1; at >= 1; at >>= 1) room[at] = Math.max(room[2 * at], room[2 * at + 1]);
  };
  const firstFit = (len: number): number => {
    if (room[1] < len) return -1;
    let at = 1;
    while (at < leaves) at = room[2 * at] >= len ? 2 * at : 2 * at + 1;
    return at - leaves;
  };
  let pages = 0;
  for (let i = 0; i < dirLen.length; i++) {
    const len = dirLen[i];
    if (len === 0) continue;
    let page = len > BLOCK_SIZE ? -1 : firstFit(len);
    if (page < 0) {
      page = pages;
      pages += Math.ceil(len / BLOCK_SIZE);
      payload[i] = page * BLOCK_SIZE;
      setRoom(pages - 1, pages * BLOCK_SIZE - payload[i] - len);
    } else {
      payload[i] = (page + 1) * BLOCK_SIZE - room[leaves + page];
      setRoom(page, room[leaves + page] - len);
    }
  }
  return pages === 0 ? 0 : pages * BLOCK_SIZE - room[leaves + pages - 1];
}

/** Longest prefix of the table that the name starts with (0 when none). */
export function prefixIdOf(name: string): number {
  let best = 0;
  for (let id = 1; id < XATTR_PREFIXES.length; id++) {
    const p = XATTR_PREFIXES[id];
    if (p.length > XATTR_PREFIXES[best].length && name.startsWith(p)) best = id;
  }
  return best;
}

export function joinPath(dir: string, name: string): string {
  return dir === '/' ? '/' + name : dir + '/' + name;
}

/** A directory's names in byte order, each name and its child checked (pass 1 of both encoders). */
export function checkedNames(children: Map<string, TreeNode>, dir: number, pathOf: (i: number) => string): string[] {
  if (!(children instanceof Map)) throw new EncodeError(`${pathOf(dir)}: children must be a Map`);
  // Default sort compares UTF-16 code units: for binary strings that is memcmp order.
  const names = [...children.keys()].sort();
  for (const name of names) {
    const nameIssue = typeof name === 'string' ? nameProblem(name) : 'entry name is not a string';
    if (nameIssue !== null) {
      const at = typeof name === 'string' ? joinPath(pathOf(dir), JSON.stringify(name).slice(1, -1)) : pathOf(dir);
      throw new EncodeError(`${at}: ${nameIssue}`);
    }
    const child = children.get(name);
    if (!child || typeof child !== 'object' || typeof child.mode !== 'number') {
      throw new EncodeError(`${joinPath(pathOf(dir), name)}: not a TreeNode`);
    }
  }
  return names;
}

/** What is wrong with a directory entry's name (a string: checked by the caller), or null. */
export function nameProblem(name: string): string | null {
  if (name.length < 1 || name.length > MAX_NAME_LEN) return `name must be 1..${MAX_NAME_LEN} bytes`;
  if (name === '.' || name === '..') return 'name must not be "." or ".."';
  if (name.includes('/') || name.includes('\0')) return 'name must not contain "/" or NUL';
  if (NON_BYTE.test(name)) return 'name must be a binary string (one char per byte, <= 0xff)';
  return null;
}

function isU32(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
}

/**
 * What is wrong with a node's own fields, or null. The validators return a message rather than
 * throw through a closure naming the path: called once per inode and per name, a closure each
 * was a million allocations for a million files.
 */
export function nodeProblem(node: TreeNode, threshold: number): string | null {
  if (!Number.isInteger(node.mode) || node.mode < 0 || node.mode > 0xffff || dtypeOfMode(node.mode) === 0) {
    return `invalid mode ${node.mode}`;
  }
  if (!isU32(node.uid)) return `uid must be an integer in 0..2^32-1, got ${node.uid}`;
  if (!isU32(node.gid)) return `gid must be an integer in 0..2^32-1, got ${node.gid}`;
  if (!Number.isSafeInteger(node.mtimeSec)) return `mtimeSec must be a safe integer, got ${node.mtimeSec}`;
  if (!Number.isInteger(node.mtimeNsec) || node.mtimeNsec < 0 || node.mtimeNsec > MAX_NSEC) {
    return `mtimeNsec must be in 0..${MAX_NSEC}, got ${node.mtimeNsec}`;
  }
  if (node.xattrs !== undefined && !(node.xattrs instanceof Map)) return 'xattrs must be a Map';
  switch (node.mode & S_IFMT) {
    case S_IFREG: {
      const { size, inline, digest } = node;
      if (!Number.isSafeInteger(size) || size < 0) return `invalid size ${size}`;
      if (inline !== undefined && !Buffer.isBuffer(inline)) return 'inline must be a Buffer';
      if (digest !== undefined && !Buffer.isBuffer(digest)) return 'digest must be a Buffer';
      if (size === 0) {
        if (inline !== undefined && inline.length !== 0) return `inline has ${inline.length} bytes but size is 0`;
        break;
      }
      if (inline !== undefined && digest !== undefined) return 'regular file has both inline and digest';
      if (inline !== undefined) {
        if (inline.length !== size) return `inline has ${inline.length} bytes but size is ${size}`;
        if (size > threshold) return `inline size ${size} exceeds the inline threshold ${threshold}`;
      } else if (digest !== undefined) {
        if (digest.length !== DIGEST_SIZE) return `digest must be ${DIGEST_SIZE} bytes, got ${digest.length}`;
      } else {
        return `regular file of ${size} bytes has neither inline content nor digest`;
      }
      break;
    }
    case S_IFLNK: {
      const target = node.target;
      if (typeof target !== 'string') return 'symlink has no target';
      if (target.length < 1 || target.length > MAX_SYMLINK_LEN) return `symlink target must be 1..${MAX_SYMLINK_LEN} bytes`;
      if (target.includes('\0')) return 'symlink target contains NUL';
      if (NON_BYTE.test(target)) return 'symlink target must be a binary string (one char per byte)';
      if (node.size !== target.length) return `symlink size ${node.size} differs from target length ${target.length}`;
      break;
    }
    case S_IFCHR:
    case S_IFBLK: {
      const major = node.rdevMajor ?? 0;
      const minor = node.rdevMinor ?? 0;
      if (!Number.isInteger(major) || major < 0 || major > MAX_DEV_MAJOR) return `device major must be 0..${MAX_DEV_MAJOR}`;
      if (!Number.isInteger(minor) || minor < 0 || minor > MAX_DEV_MINOR) return `device minor must be 0..${MAX_DEV_MINOR}`;
      break;
    }
  }
  return null;
}

/** What is wrong with an xattr, or null. */
function xattrProblem(name: string, value: unknown): string | null {
  if (typeof name !== 'string') return 'name is not a string';
  if (name.length < 1 || name.length > MAX_XATTR_NAME_LEN) return `name must be 1..${MAX_XATTR_NAME_LEN} bytes`;
  if (name.startsWith(XATTR_OVERLAY_PREFIX) && name.length > MAX_XATTR_OVERLAY_NAME_LEN) {
    return `a ${XATTR_OVERLAY_PREFIX}* name must be at most ${MAX_XATTR_OVERLAY_NAME_LEN} bytes (a mount shows it escaped, 8 bytes longer, and cannot serve a name over ${MAX_XATTR_NAME_LEN})`;
  }
  if (name.includes('\0')) return 'name contains NUL';
  if (NON_BYTE.test(name)) return 'name must be a binary string (one char per byte)';
  if (!Buffer.isBuffer(value)) return 'value must be a Buffer';
  if (value.length > MAX_XATTR_VALUE_LEN) return `value must be at most ${MAX_XATTR_VALUE_LEN} bytes`;
  return null;
}

export function writeU64(view: DataView, at: number, v: number): void {
  view.setUint32(at, v % TWO32, true);
  view.setUint32(at + 4, Math.floor(v / TWO32), true);
}

const SEC_SPAN = 2 ** MTIME_SEC_BITS;
const SEC_HI_BITS = MTIME_SEC_BITS - 32;

/**
 * ub_inode.mtime: seconds as 34-bit two's complement in bits 0..33, nanoseconds in bits 34..63.
 * A time outside the range is clamped to its nearest end; returns false when it was.
 */
function writeMtime(view: DataView, at: number, sec: number, nsec: number): boolean {
  let inRange = true;
  if (sec < MIN_MTIME_SEC) {
    [sec, nsec, inRange] = [MIN_MTIME_SEC, 0, false];
  } else if (sec > MAX_MTIME_SEC) {
    [sec, nsec, inRange] = [MAX_MTIME_SEC, MAX_NSEC, false];
  }
  const bits = sec < 0 ? sec + SEC_SPAN : sec;
  const hi = Math.floor(bits / TWO32);
  view.setUint32(at, bits - hi * TWO32, true);
  view.setUint32(at + 4, (hi + nsec * 2 ** SEC_HI_BITS) >>> 0, true);
  return inRange;
}
