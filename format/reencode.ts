// Incremental encoding: a tree from openLazyTree (a parent blob plus what a layer changed) ->
// the new blob, byte for byte what encodeBlob writes for the fully decoded tree with the same
// changes (format/lazy.ts; test/reencode.test.mjs checks the equality on random trees and edits).
//
// The format is canonical (breadth-first inode numbers, sorted digests, first-fit directory
// placement), so one new file can renumber most inodes: the new blob cannot be the parent's
// bytes with a patch. What the re-encoder avoids is the per-inode JavaScript work: inodes the
// layer never reached have no TreeNode; their records, their directories' chunks, their inline
// items, digests and xattr sets are copied from the parent's bytes and only the fields that
// hold numbers of other records (nlink, parent, payload, xattr set, dirent inode numbers) are
// rewritten. Nodes made or changed by the layer go through encodeBlob's own code.
//
// Trust: every offset taken from the parent is bounds-checked (a bad one is a BlobError, never a
// RangeError), and every record copied is checked as the reader checks it. A parent opened with
// `verify` (read from disk, or given to `cfs build --from`) also has its CRCs and the names of
// every directory copied checked, so what a reader refuses is refused or decoded, never copied;
// without it (the encoder's own output, kept in memory) names are trusted.

import { BlobError, type Inode } from './decode.js';
import {
  EncodeError, allocateBlob, checkedNames, countEntries, dirDataLength, newPayloadPlan, placeNodePayload, joinPath, nodeProblem,
  placeDirs, sealBlob, warnClamped, writeDirEntries, writeNodeInode, writeU64, type BlobOut, type EncodeOptions,
} from './encode.js';
import { childrenDeferred, nodeAt, type LazyBlob } from './lazy.js';
import {
  DIGEST_SIZE, DIR_CHUNK_SIZE, DIRENT, DIRENT_SIZE, INO, INODE_SIZE, Layout, MAX_DIR_BYTES, MAX_INLINE_SIZE, MAX_INODES,
  MAX_NAME_LEN, MAX_NSEC, MAX_SYMLINK_LEN, SectionId,
  dirChunkCount, dirChunkLen, dtypeOfMode, inodeOffset,
} from './layout.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type TreeNode } from './tree.js';

const TWO32 = 0x1_0000_0000;

/** The parent blob's sections, read through bounds-checked accessors. */
interface Parent {
  lb: LazyBlob;
  buf: Buffer;
  view: DataView;
  count: number;
  inodesAt: number;
  dirsAt: number;
  dirsSize: number;
  dataAt: number;
  dataSize: number;
  digestsAt: number;
  digestCount: number;
  /** The blob as 32-bit words when its buffer allows it (copyRecord). */
  words: Uint32Array | null;
}

function parentOf(lb: LazyBlob): Parent {
  const buf = lb.blob;
  const sec = lb.reader.header.sections;
  return {
    lb, buf, view: new DataView(buf.buffer, buf.byteOffset, buf.length), count: lb.inodeCount,
    inodesAt: sec[SectionId.INODES].offset,
    dirsAt: sec[SectionId.DIRS].offset, dirsSize: sec[SectionId.DIRS].size,
    dataAt: sec[SectionId.DATA].offset, dataSize: sec[SectionId.DATA].size,
    digestsAt: sec[SectionId.DIGESTS].offset, digestCount: sec[SectionId.DIGESTS].count,
    words: wordsOf(buf),
  };
}

/** `buf` as 32-bit words, or null when its offset in its ArrayBuffer is not word-aligned. */
export function wordsOf(buf: Buffer): Uint32Array | null {
  return buf.byteOffset % 4 === 0 ? new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2) : null;
}

const recAt = (p: Parent, o: number) => p.inodesAt + inodeOffset(o);
const modeOf = (p: Parent, o: number) => p.view.getUint16(recAt(p, o) + INO.mode, true);
const isDirMode = (mode: number) => (mode & S_IFMT) === S_IFDIR;

/**
 * Whether parent inode `o`, now a directory with TreeNode `node` (undefined: never made), takes
 * its entries from the parent's chunks: it was a directory there and its `children` getter was
 * never read, set, deleted or redefined. A parent file made a directory in place has a Map (or
 * none), like any new directory.
 */
const listsFromParent = (p: Parent, o: number, node: TreeNode | undefined) =>
  node === undefined ? isDirMode(modeOf(p, o)) : childrenDeferred(node);

function u64At(p: Parent, at: number): number {
  const hi = p.view.getUint32(at + 4, true);
  if (hi > 0x1fffff) throw new BlobError(`64-bit field at ${at} is too large`);
  return hi * TWO32 + p.view.getUint32(at, true);
}

/** A parent directory's data: [at, at + size) of the blob, checked against DIRS. */
function dirDataOf(p: Parent, o: number): { at: number; size: number } {
  const r = recAt(p, o);
  const size = u64At(p, r + INO.size);
  const payload = u64At(p, r + INO.payload);
  if (size > MAX_DIR_BYTES || payload + size > p.dirsSize) throw new BlobError(`directory inode ${o}: data outside DIRS`);
  return { at: p.dirsAt + payload, size };
}

/** A chunk's first nameoff (8 x its entries), or -1 when it is not one a reader accepts (SPEC §5). */
function firstNameoff(p: Parent, chunkAt: number, len: number): number {
  const first = p.view.getUint16(chunkAt + DIRENT.nameoff, true);
  return len < DIRENT_SIZE + 1 || first === 0 || first % DIRENT_SIZE !== 0 || first >= len ? -1 : first;
}

/**
 * Calls fn(dirent offset, its chunk's offset, the chunk's length), offsets in the blob, for each
 * dirent of parent directory `o`.
 */
function forEachRawDirent(p: Parent, o: number, fn: (d: number, chunkAt: number, len: number) => void): void {
  const { at, size } = dirDataOf(p, o);
  const chunks = dirChunkCount(size);
  for (let c = 0; c < chunks; c++) {
    const chunkAt = at + c * DIR_CHUNK_SIZE;
    const len = dirChunkLen(size, c);
    const first = firstNameoff(p, chunkAt, len);
    if (first < 0) throw new BlobError(`directory inode ${o} chunk ${c}: invalid first nameoff`);
    for (let d = chunkAt, end = chunkAt + first; d < end; d += DIRENT_SIZE) fn(d, chunkAt, len);
  }
}

/** Binary search of a digest in the parent's sorted DIGESTS: its index, or -(insertion point) - 1. */
function findDigest(p: Parent, digest: Buffer): number {
  let lo = 0;
  let hi = p.digestCount - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const at = p.digestsAt + mid * DIGEST_SIZE;
    const c = p.buf.compare(digest, 0, DIGEST_SIZE, at, at + DIGEST_SIZE);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -lo - 1;
}

/** encodeBlob for a root from openLazyTree (see the top of this file). */
export function encodeLazy(root: TreeNode, lb: LazyBlob, threshold: number, opts: EncodeOptions): Buffer {
  const p = parentOf(lb);
  const oldCount = p.count;

  // ---- Pass 1: breadth-first numbering, as encodeBlob's. ----
  // New inode i is parent inode srcOld[i] (or -1: a node the layer made); nodes[i] is its
  // TreeNode when it has one. Directories nobody opened are listed from the parent's chunks.
  // Entries of the directories the layer opened or made: a bound of the inodes and Map entries
  // not in the parent. Never opens a directory itself.
  const fresh = countEntries(root, (dir) => {
    const o = lb.indexOf.get(dir);
    return o !== undefined && listsFromParent(p, o, dir); // counted in the parent's inodes
  });
  const bound = oldCount + fresh + 1;
  const srcOld = new Int32Array(bound);
  const nodes: (TreeNode | undefined)[] = new Array(bound);
  const hasNode = new Uint8Array(bound); // nodes[i] !== undefined, without reading holes
  const newOf = new Int32Array(oldCount).fill(-1);
  const freshIndex = new Map<TreeNode, number>();
  const nlink = new Uint32Array(bound);
  const parent = new Uint32Array(bound);
  const firstParent = new Int32Array(bound);
  const firstName: (string | undefined)[] = [];
  const rawList = new Uint8Array(bound);
  const entryStart = new Uint32Array(bound);
  const entryEnd = new Uint32Array(bound);
  const entryName: string[] = [];
  let entryIno = new Uint32Array(fresh + 1);
  let mapEntries = 0;
  let direntCount = 0;
  let count = 1;
  srcOld[0] = 0;
  newOf[0] = 0;
  nodes[0] = root;
  hasNode[0] = 1;
  firstParent[0] = -1;
  firstName[0] = '';

  const nameOf = (i: number): string => {
    const known = firstName[i];
    if (known !== undefined) return known;
    // Reached through a directory listed from the parent: find its name there.
    let found = '?';
    forEachRawDirent(p, srcOld[firstParent[i]], (d, chunkAt, len) => {
      if (found === '?' && p.view.getUint32(d + DIRENT.ino, true) === srcOld[i]) found = rawNameAt(p, d, chunkAt, len);
    });
    return found;
  };
  const pathOf = (i: number): string => {
    const parts: string[] = [];
    for (let at = i; at > 0; at = firstParent[at]) parts.push(nameOf(at));
    return '/' + parts.reverse().join('/');
  };
  const newIndex = (old: number, made: TreeNode | undefined, head: number, isDir: boolean): number => {
    const idx = count++;
    if (idx >= MAX_INODES) throw new EncodeError(`too many inodes (limit ${MAX_INODES})`);
    srcOld[idx] = old;
    if (old >= 0) newOf[old] = idx;
    if (made !== undefined) {
      nodes[idx] = made;
      hasNode[idx] = 1;
    }
    if (isDir) parent[idx] = head;
    firstParent[idx] = head;
    return idx;
  };
  const reachedTwice = (at: string, idx: number) =>
    new EncodeError(`${at}: directory reached twice (cycle or hardlinked directory; first at ${pathOf(idx)})`);

  for (let head = 0; head < count; head++) {
    let node = hasNode[head] ? nodes[head] : undefined;
    const old = srcOld[head];
    let raw = old >= 0 && listsFromParent(p, old, node);
    if (raw && !copyableDir(p, old, lb.strict)) {
      // A parent from another writer (readers accept any packing): its bytes are not what
      // encodeBlob would write, so this directory is decoded and encoded like an opened one.
      node = nodeAt(lb, old);
      void node.children;
      nodes[head] = node;
      hasNode[head] = 1;
      raw = false;
    }
    if (node !== undefined) {
      const problem = nodeProblem(node, threshold);
      if (problem !== null) throw new EncodeError(`${pathOf(head)}: ${problem}`);
    }
    entryStart[head] = mapEntries;
    const mode = node !== undefined ? node.mode : modeOf(p, old);
    if (isDirMode(mode)) {
      let subdirs = 0;
      if (raw) {
        // Never opened: the parent's entries, in the parent's (byte) order.
        rawList[head] = 1;
        forEachRawDirent(p, old, (d, chunkAt, len) => {
          const o = p.view.getUint32(d + DIRENT.ino, true);
          if (o >= oldCount) throw new BlobError(`directory inode ${old}: entry names inode ${o} out of range`);
          const made = lb.made[o] ? lb.nodes[o] : undefined;
          const mode = made !== undefined ? made.mode : modeOf(p, o);
          if (made === undefined && p.buf[d + DIRENT.fileType] !== dtypeOfMode(mode)) {
            throw new BlobError(`directory inode ${old}: the file type of the entry for inode ${o} differs from the inode`);
          }
          const isDir = isDirMode(mode);
          let idx = newOf[o];
          if (idx < 0) idx = newIndex(o, made, head, isDir);
          else if (isDir) throw reachedTwice(joinPath(pathOf(head), rawNameAt(p, d, chunkAt, len)), idx);
          if (isDir) subdirs++;
          nlink[idx]++;
          direntCount++;
        });
      } else {
        const children = node!.children;
        if (children !== undefined) {
          const names = checkedNames(children, head, pathOf);
          for (const name of names) {
            const child = children.get(name)!;
            const isDir = isDirMode(child.mode);
            const o = lb.indexOf.get(child);
            let idx = o !== undefined ? newOf[o] : (freshIndex.get(child) ?? -1);
            if (idx < 0) {
              idx = newIndex(o ?? -1, child, head, isDir);
              if (o === undefined) freshIndex.set(child, idx);
              firstName[idx] = name;
            } else if (isDir) {
              throw reachedTwice(joinPath(pathOf(head), name), idx);
            }
            if (isDir) subdirs++;
            nlink[idx]++;
            entryName.push(name);
            if (mapEntries === entryIno.length) {
              // only when a directory of another writer's packing was decoded above
              const grown = new Uint32Array(entryIno.length * 2);
              grown.set(entryIno);
              entryIno = grown;
            }
            entryIno[mapEntries++] = idx;
            direntCount++;
          }
        }
      }
      nlink[head] = 2 + subdirs;
    } else if (node !== undefined && node.children !== undefined && node.children.size > 0) {
      throw new EncodeError(`${pathOf(head)}: only directories have children`);
    }
    entryEnd[head] = mapEntries;
  }
  const inodeCount = count;

  // ---- Pass 2: place payloads, in inode order as encodeBlob does. ----
  const plan = newPayloadPlan(inodeCount);
  const { layout, payload, dirLen, xattrSetOf, data, xattrSets } = plan;
  // parent xattr set -> its index in the new blob's plan (decoded once per set)
  const setOfOld = new Map<number, number>();
  // EXTERNAL files: parent digest index (>= 0), or -1 and the digest in freshDigests
  const digestOld = new Float64Array(inodeCount).fill(-1);
  const freshDigests: { digest: Buffer; inodes: number[]; index?: number }[] = [];
  const freshDigestAt = new Map<string, number>();
  const usedOld = new Uint8Array(p.digestCount);
  const dirBytesOf = (i: number) => (rawList[i] ? dirDataOf(p, srcOld[i]).size : dirDataLength(entryName, entryStart[i], entryEnd[i]));

  for (let i = 0; i < inodeCount; i++) {
    const node = hasNode[i] ? nodes[i] : undefined;
    if (node !== undefined) {
      if (!placeNodePayload(plan, i, node, dirBytesOf, pathOf)) continue;
      const k = findDigest(p, node.digest!);
      if (k >= 0) {
        usedOld[k] = 1;
        digestOld[i] = k;
        continue;
      }
      const key = node.digest!.toString('latin1');
      let f = freshDigestAt.get(key);
      if (f === undefined) {
        freshDigestAt.set(key, (f = freshDigests.length));
        freshDigests.push({ digest: node.digest!, inodes: [] });
      }
      freshDigests[f].inodes.push(i);
      continue;
    }
    // An inode the layer never reached: the parent's record says it all.
    const o = srcOld[i];
    const r = recAt(p, o);
    const mode = p.view.getUint16(r + INO.mode, true);
    const oldLayout = p.view.getUint8(r + INO.layout);
    const size = u64At(p, r + INO.size);
    const problem = rawRecordProblem(p, r, mode, oldLayout, size);
    if (problem !== null) throw new BlobError(`inode ${o}: ${problem}`);
    layout[i] = oldLayout;
    switch (mode & S_IFMT) {
      case S_IFREG:
        plan.dataBytes += size;
        if (oldLayout === Layout.INLINE) {
          if (size > threshold) throw new EncodeError(`${pathOf(i)}: inline size ${size} exceeds the inline threshold ${threshold}`);
          payload[i] = data.place(rawItem(p, r, size, o));
        } else if (oldLayout === Layout.EXTERNAL) {
          const k = u64At(p, r + INO.payload);
          if (k >= p.digestCount) throw new BlobError(`inode ${o}: digest index ${k} out of range`);
          usedOld[k] = 1;
          digestOld[i] = k;
        }
        break;
      case S_IFLNK: {
        const target = rawItem(p, r, size, o);
        if (target.includes('\0')) throw new BlobError(`inode ${o}: symlink target contains NUL`);
        payload[i] = data.place(target);
        break;
      }
      case S_IFDIR:
        dirLen[i] = size; // listed raw: the same entries, the same bytes
        if (size > 0) plan.dirCount++;
        break;
    }
    const s = p.view.getUint32(r + INO.xattrSet, true);
    if (s !== 0) {
      let set = setOfOld.get(s);
      if (set === undefined) {
        if (s > lb.reader.header.sections[SectionId.XATTR_INDEX].count) throw new BlobError(`inode ${o}: xattr_set ${s} out of range`);
        const planned = xattrSets.add(lb.reader.xattrsOf({ xattrSet: s } as Inode));
        if (typeof planned === 'string') throw new BlobError(`xattr set ${s}: ${planned}`);
        setOfOld.set(s, (set = planned));
      }
      xattrSetOf[i] = set;
    }
  }

  const dirsSize = placeDirs(dirLen, payload);
  const digests = mergeDigests(p, usedOld, freshDigests);
  for (let i = 0; i < inodeCount; i++) if (digestOld[i] >= 0) payload[i] = digests.newOfOld[digestOld[i]];
  for (const f of freshDigests) for (const i of f.inodes) payload[i] = f.index!;

  // ---- Pass 3: allocate and write. ----
  const out = allocateBlob(inodeCount, plan.dirCount, dirsSize, data, digests.count, xattrSets);
  const { blob, view } = out;
  const clamped = { count: 0, first: -1 };
  for (let i = 0; i < inodeCount; i++) {
    const o = out.inodeAt(i);
    const node = hasNode[i] ? nodes[i] : undefined;
    if (node !== undefined) {
      if (!writeNodeInode(view, o, node, layout[i], nlink[i], xattrSetOf[i], parent[i], payload[i], dirLen[i]) && clamped.count++ === 0) clamped.first = i;
      continue;
    }
    // mode, layout, uid, gid, size, mtime and a device's rdev are the parent's; the rest is renumbered
    copyRecord(p, recAt(p, srcOld[i]), out, o);
    view.setUint32(o + INO.nlink, nlink[i], true);
    view.setUint32(o + INO.xattrSet, xattrSetOf[i], true);
    if (layout[i] === Layout.DIR) view.setUint32(o + INO.aux, parent[i], true);
    writeU64(view, o + INO.payload, layout[i] === Layout.NONE ? 0 : payload[i]);
  }
  warnClamped(opts, clamped, () => pathOf(clamped.first), () => nodes[clamped.first]!.mtimeSec);

  // DIRS: opened and new directories from their Maps, the others copied and renumbered.
  const dtypeOf = (child: number) => {
    const node = hasNode[child] ? nodes[child] : undefined;
    return dtypeOfMode(node !== undefined ? node.mode : modeOf(p, srcOld[child]));
  };
  const dirsAt = out.sectionAt[SectionId.DIRS];
  for (let i = 0; i < inodeCount; i++) {
    if (layout[i] !== Layout.DIR || dirLen[i] === 0) continue;
    if (!rawList[i]) {
      writeDirEntries(out, i, payload[i], dirLen[i], entryName, entryIno, entryStart[i], entryEnd[i], dtypeOf);
      continue;
    }
    // chunk by chunk, up to the last name's end: padding and reserved bytes stay zero
    const from = dirDataOf(p, srcOld[i]);
    const to = dirsAt + payload[i];
    for (let c = 0, chunks = dirChunkCount(from.size); c < chunks; c++) {
      const chunkAt = from.at + c * DIR_CHUNK_SIZE;
      p.buf.copy(blob, to + c * DIR_CHUNK_SIZE, chunkAt, chunkAt + chunkUsed(p, chunkAt, dirChunkLen(from.size, c)));
    }
    forEachRawDirent(p, srcOld[i], (d) => {
      const at = to + (d - from.at);
      const child = newOf[p.view.getUint32(d + DIRENT.ino, true)];
      view.setUint32(at + DIRENT.ino, child, true);
      blob[at + DIRENT.reserved] = 0;
      if (hasNode[child]) blob[at + DIRENT.fileType] = dtypeOfMode(nodes[child]!.mode);
    });
  }

  data.write(out);
  digests.write(out);
  xattrSets.write(out);
  sealBlob(out, threshold, inodeCount, direntCount, plan.dataBytes);
  return blob;
}

/**
 * One 48-byte inode record from the parent to the new blob. Buffer.copy costs ~0.2 us a call
 * (a quarter of the whole re-encode for a million inodes); 12 word moves cost a tenth of that.
 */
function copyRecord(p: Parent, from: number, out: BlobOut, to: number): void {
  const src = p.words;
  const dst = out.words;
  if (src === null || dst === null) {
    p.buf.copy(out.blob, to, from, from + INODE_SIZE);
    return;
  }
  // records start at multiples of 48 inside 4096-aligned sections: word-aligned
  for (let w = from >>> 2, v = to >>> 2, end = w + INODE_SIZE / 4; w < end; w++, v++) dst[v] = src[w];
}

/**
 * What is wrong with a parent record the re-encoder copies without a TreeNode (the checks of
 * BlobReader.inode that the copy relies on, without its object per inode), or null. Offsets are
 * checked where they are used.
 */
function rawRecordProblem(p: Parent, r: number, mode: number, layout: number, size: number): string | null {
  if (dtypeOfMode(mode) === 0) return `invalid mode 0${mode.toString(8)}`;
  if (p.buf[r + INO.reserved] !== 0) return 'reserved byte is not zero';
  if (p.view.getUint32(r + INO.mtime + 4, true) >>> 2 > MAX_NSEC) return 'mtime nanoseconds out of range';
  const aux = p.view.getUint32(r + INO.aux, true);
  const payloadSet = p.view.getUint32(r + INO.payload, true) !== 0 || p.view.getUint32(r + INO.payload + 4, true) !== 0;
  switch (mode & S_IFMT) {
    case S_IFREG:
      if (aux !== 0) return 'aux set on a regular file';
      if (layout === Layout.NONE) return size === 0 && !payloadSet ? null : 'non-empty regular file without payload';
      if (layout === Layout.INLINE) return size >= 1 && size <= MAX_INLINE_SIZE ? null : `inline size ${size} out of range`;
      if (layout === Layout.EXTERNAL) return size >= 1 ? null : 'external file of size 0';
      return `layout ${layout} is invalid for a regular file`;
    case S_IFLNK:
      if (aux !== 0) return 'aux set on a symlink';
      return layout === Layout.INLINE && size >= 1 && size <= MAX_SYMLINK_LEN ? null : 'invalid symlink layout or size';
    case S_IFDIR:
      return layout === Layout.DIR ? null : `layout ${layout} is invalid for a directory`;
    case S_IFCHR:
    case S_IFBLK:
      return layout === Layout.NONE && size === 0 && !payloadSet ? null : 'device with a payload or size';
    default:
      return layout === Layout.NONE && size === 0 && !payloadSet && aux === 0 ? null : 'fifo or socket with a payload, size or aux';
  }
}

/**
 * Where entry k's name ends in a chunk of `len` bytes with n entries (offsets from the chunk
 * start): the next nameoff, or for the last entry the first zero byte or the chunk's end (SPEC §5).
 */
function nameEndIn(p: Parent, chunkAt: number, len: number, n: number, k: number): number {
  if (k + 1 < n) return p.view.getUint16(chunkAt + (k + 1) * DIRENT_SIZE + DIRENT.nameoff, true);
  let end = p.view.getUint16(chunkAt + k * DIRENT_SIZE + DIRENT.nameoff, true);
  while (end < len && p.buf[chunkAt + end] !== 0) end++;
  return end;
}

/** Bytes of a chunk that copyableDir accepted in use: up to its last name's end. */
function chunkUsed(p: Parent, chunkAt: number, len: number): number {
  const n = p.view.getUint16(chunkAt + DIRENT.nameoff, true) / DIRENT_SIZE;
  return nameEndIn(p, chunkAt, len, n, n - 1);
}

/**
 * Whether parent directory `o`'s bytes can be copied as they are: packed as encodeBlob packs
 * (SPEC §5: each chunk filled with as many entries as fit, the data ending right after the last
 * name), every nameoff inside its chunk and increasing, and, for a parent from outside this
 * process (`strict`: `openLazyTree(blob, { verify: true })`), every name as a reader accepts it
 * (1..255 bytes, no "/" or NUL, not "." or "..", strictly increasing within and across chunks).
 * Otherwise the directory is decoded, which refuses what is wrong, and encoded like an opened one.
 */
function copyableDir(p: Parent, o: number, strict: boolean): boolean {
  const { at, size } = dirDataOf(p, o);
  const chunks = dirChunkCount(size);
  let prevAt = -1;
  let prevLen = 0;
  for (let c = 0; c < chunks; c++) {
    const chunkAt = at + c * DIR_CHUNK_SIZE;
    const len = dirChunkLen(size, c);
    const first = firstNameoff(p, chunkAt, len);
    if (first < 0) return false;
    const n = first / DIRENT_SIZE;
    let start = first;
    for (let k = 0; k < n; k++) {
      const end = nameEndIn(p, chunkAt, len, n, k);
      if (end <= start || end > len || end - start > MAX_NAME_LEN) return false;
      if (strict) {
        const nameAt = chunkAt + start;
        const nameLen = end - start;
        if (!nameBytesOk(p.buf, nameAt, nameLen)) return false;
        if (prevAt >= 0 && p.buf.compare(p.buf, nameAt, nameAt + nameLen, prevAt, prevAt + prevLen) >= 0) return false;
        prevAt = nameAt;
        prevLen = nameLen;
      }
      start = end;
    }
    if (c === chunks - 1) return start === len;
    // the next chunk's first entry must not have fitted in this one
    const next = chunkAt + DIR_CHUNK_SIZE;
    const nextLen = dirChunkLen(size, c + 1);
    const nextFirst = firstNameoff(p, next, nextLen);
    if (nextFirst < 0) return false;
    const nameEnd = nameEndIn(p, next, nextLen, nextFirst / DIRENT_SIZE, 0);
    if (start + DIRENT_SIZE + (nameEnd - nextFirst) <= DIR_CHUNK_SIZE) return false;
  }
  return true;
}

/** A name's bytes as SPEC §5 allows them: no "/" or NUL, not "." or "..". */
function nameBytesOk(buf: Buffer, at: number, len: number): boolean {
  for (let j = at; j < at + len; j++) if (buf[j] === 0x2f || buf[j] === 0) return false;
  return !(buf[at] === 0x2e && (len === 1 || (len === 2 && buf[at + 1] === 0x2e)));
}

/** The name of the dirent at blob offset d of the chunk [chunkAt, +len) (one forEachRawDirent checked). */
function rawNameAt(p: Parent, d: number, chunkAt: number, len: number): string {
  const n = p.view.getUint16(chunkAt + DIRENT.nameoff, true) / DIRENT_SIZE;
  const k = (d - chunkAt) / DIRENT_SIZE;
  const start = p.view.getUint16(d + DIRENT.nameoff, true);
  const end = Math.min(nameEndIn(p, chunkAt, len, n, k), start + MAX_NAME_LEN, len);
  return p.buf.toString('latin1', chunkAt + start, chunkAt + Math.max(start, end));
}

/** An inline item of the parent (inline file or symlink target) as a binary string. */
function rawItem(p: Parent, r: number, size: number, o: number): string {
  const off = u64At(p, r + INO.payload);
  if (off + size > p.dataSize) throw new BlobError(`inode ${o}: inline data outside DATA`);
  return p.buf.toString('latin1', p.dataAt + off, p.dataAt + off + size);
}

/**
 * The new DIGESTS: the parent's digests still used, in their (sorted) order, with the fresh
 * ones merged in at their places. Copies runs of the parent's table; sets each fresh digest's
 * index and returns parent index -> new index.
 */
function mergeDigests(p: Parent, usedOld: Uint8Array, freshDigests: { digest: Buffer; inodes: number[]; index?: number }[]) {
  const fresh = freshDigests.map((f) => ({ f, at: -findDigest(p, f.digest) - 1 }));
  fresh.sort((a, b) => Buffer.compare(a.f.digest, b.f.digest));
  const newOfOld = new Float64Array(p.digestCount);
  // pieces of the new table in order: [parent index, run length] or a fresh digest
  const pieces: ({ from: number; n: number } | Buffer)[] = [];
  let next = 0;
  let f = 0;
  let run: { from: number; n: number } | null = null;
  for (let d = 0; d <= p.digestCount; d++) {
    while (f < fresh.length && fresh[f].at === d) {
      fresh[f].f.index = next++;
      pieces.push(fresh[f].f.digest);
      run = null;
      f++;
    }
    if (d === p.digestCount) break;
    if (!usedOld[d]) {
      run = null;
      continue;
    }
    newOfOld[d] = next++;
    if (run === null) pieces.push((run = { from: d, n: 0 }));
    run.n++;
  }
  return {
    count: next,
    newOfOld,
    write(out: { blob: Buffer; sectionAt: number[] }) {
      let at = out.sectionAt[SectionId.DIGESTS];
      for (const piece of pieces) {
        if (Buffer.isBuffer(piece)) {
          out.blob.set(piece, at);
          at += DIGEST_SIZE;
        } else {
          const from = p.digestsAt + piece.from * DIGEST_SIZE;
          p.buf.copy(out.blob, at, from, from + piece.n * DIGEST_SIZE);
          at += piece.n * DIGEST_SIZE;
        }
      }
    },
  };
}
