// A tree over an existing blob that decodes only what is used (the snapshotter's Commit input).
//
// decodeTree builds a TreeNode for every inode of the parent; a layer then changes a few
// directories and encodeBlob walks every node again. openLazyTree instead gives a root whose
// directories decode their entries from the blob the first time `children` is read (a getter
// that turns itself into a plain property), so a layer applied to it costs what the layer
// touches. encodeBlob recognises such a root and re-encodes incrementally (format/reencode.ts):
// nodes never made (and directories never opened) are copied from the parent blob's bytes,
// renumbered, and the result is byte for byte what encodeBlob gives for decodeTree of the
// parent with the same changes.
//
// Nodes are ordinary mutable TreeNodes; hardlinks are one node object, as decodeTree gives.

import { decodeTree, openBlob, nodeOf, sourceFromBuffer, BlobError, type BlobReader } from './decode.js';
import { S_IFDIR, S_IFMT, type TreeNode } from './tree.js';
import { DIGEST_SIZE, SectionId, fileTypeOfDtype } from './layout.js';

/** What a lazy tree knows about the blob under it. Internal to format/. */
export interface LazyBlob {
  readonly blob: Buffer;
  readonly reader: BlobReader;
  readonly inodeCount: number;
  /** The node made for each inode index of the parent, once made. */
  readonly nodes: (TreeNode | undefined)[];
  /** 1 where nodes[i] exists (reading a hole of a sparse array is several times slower). */
  readonly made: Uint8Array;
  /** Node -> its inode index in the parent (nodes made here only). */
  readonly indexOf: Map<TreeNode, number>;
  /** 1 for a directory already listed by an opened parent (a second listing is a cycle). */
  readonly listed: Uint8Array;
  /** The blob came from outside this process: names are checked before directories are copied. */
  readonly strict: boolean;
}

const LAZY = Symbol('unionblob.lazyBlob');

/**
 * A tree over `blob` that decodes directories on first use. `verify` recomputes the section
 * CRCs first (a blob read back from disk; the encoder's own output needs no check): the
 * re-encoder copies bytes the reader does not validate one by one. A blob that this encoder
 * cannot have written (root not inode 0, DIGESTS not sorted and unique: readers accept both) is
 * decoded whole instead, so encodeBlob gives what it gives for decodeTree.
 */
export function openLazyTree(blob: Buffer, opts: { verify?: boolean } = {}): TreeNode {
  const reader = openBlob(sourceFromBuffer(blob));
  if (opts.verify) reader.checkSections();
  if (reader.rootIno !== 0 || !digestsSorted(blob, reader)) return decodeTree(reader);
  const n = reader.header.inodeCount;
  const lb: LazyBlob = {
    blob, reader, inodeCount: n, nodes: new Array(n), made: new Uint8Array(n), indexOf: new Map(), listed: new Uint8Array(n),
    strict: opts.verify === true,
  };
  const root = nodeAt(lb, 0);
  lb.listed[0] = 1;
  Object.defineProperty(root, LAZY, { value: lb, enumerable: false });
  return root;
}

/** DIGESTS in strictly increasing memcmp order (SPEC §7), compared a leading word at a time. */
function digestsSorted(blob: Buffer, reader: BlobReader): boolean {
  const { offset, count } = reader.header.sections[SectionId.DIGESTS];
  const view = new DataView(blob.buffer, blob.byteOffset, blob.length);
  for (let k = 1; k < count; k++) {
    const at = offset + k * DIGEST_SIZE;
    const a = view.getUint32(at - DIGEST_SIZE, false);
    const b = view.getUint32(at, false);
    if (a < b) continue;
    // source: the previous digest, target: this one; -1 when the previous sorts first
    if (a > b || blob.compare(blob, at, at + DIGEST_SIZE, at - DIGEST_SIZE, at) >= 0) return false;
  }
  return true;
}

/** The blob under a root from openLazyTree, else undefined. */
export function lazyBlobOf(root: TreeNode): LazyBlob | undefined {
  return (root as any)[LAZY];
}

/** True for a directory of a lazy tree whose entries were not decoded yet (reading `children` would). */
export function childrenDeferred(node: TreeNode): boolean {
  return Object.getOwnPropertyDescriptor(node, 'children')?.get !== undefined;
}

/** The node of parent inode `i`, made on first use; a directory's children wait to be read. */
export function nodeAt(lb: LazyBlob, i: number): TreeNode {
  let node = lb.nodes[i];
  if (node !== undefined) return node;
  const inode = lb.reader.inode(i);
  node = nodeOf(lb.reader, inode);
  if ((node.mode & S_IFMT) === S_IFDIR) deferChildren(lb, node, i);
  lb.nodes[i] = node;
  lb.made[i] = 1;
  lb.indexOf.set(node, i);
  return node;
}

function deferChildren(lb: LazyBlob, node: TreeNode, i: number): void {
  Object.defineProperty(node, 'children', {
    configurable: true,
    enumerable: true,
    get(this: TreeNode) {
      const children = readChildren(lb, i);
      Object.defineProperty(this, 'children', { value: children, writable: true, configurable: true, enumerable: true });
      return children;
    },
    set(this: TreeNode, value: Map<string, TreeNode> | undefined) {
      // Replaced before it was read: the entries in the blob are gone from this directory.
      Object.defineProperty(this, 'children', { value, writable: true, configurable: true, enumerable: true });
    },
  });
}

/** Decode directory `i`'s entries (checked as decodeTree's walk checks them). */
function readChildren(lb: LazyBlob, i: number): Map<string, TreeNode> {
  const children = new Map<string, TreeNode>();
  for (const e of lb.reader.readdir(i)) {
    const child = nodeAt(lb, e.ino);
    const inode = lb.reader.inode(e.ino);
    if (fileTypeOfDtype(e.dtype) !== inode.type) {
      throw new BlobError(`file type of dirent ${JSON.stringify(e.name)} in directory inode ${i} differs from inode ${e.ino}`);
    }
    if (inode.type === 'dir') {
      if (lb.listed[e.ino]) throw new BlobError(`directory inode ${e.ino} reached twice`);
      if (inode.aux !== i) throw new BlobError(`directory inode ${e.ino} has parent ${inode.aux}, found in ${i}`);
      lb.listed[e.ino] = 1;
    }
    children.set(e.name, child);
  }
  return children;
}
