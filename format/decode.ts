// Blob -> answers, lazily (format/SPEC.md). The reader touches only what a question needs: the
// header page, one inode record per inode, O(log chunks) directory chunks per lookup. It trusts
// nothing: every offset, length, count and index is checked against the section that holds it
// before use, and anything wrong is reported as a BlobError ("corrupt blob: ..."), never as a
// RangeError from a Buffer accessor. Tree walks detect a directory reached twice.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { crc32c } from './crc32c.js';
import {
  BLOCK_SIZE, BLOCK_SIZE_LOG2, DIGEST_SIZE, DIR_CHUNK_SIZE, DIRENT, DIRENT_SIZE, DT, HDR, HEADER_SIZE, INO, INODE_SIZE, MTIME_SEC_BITS,
  KNOWN_INCOMPAT, Layout, MAGIC, MAX_INLINE_SIZE, MAX_NAME_LEN, MAX_NSEC, MAX_SYMLINK_LEN, MAX_XATTR_NAME_LEN,
  MAX_XATTR_VALUE_LEN, SEC, SECTION_COUNT, SECTION_ENTRY_SIZE, SECTION_NAMES, SECTION_SLOTS, SECTION_TABLE_OFFSET,
  SectionId, VERSION_MAJOR, XATTR_ENTRY_HEADER_SIZE, XATTR_PREFIXES, XATTR_SET_SIZE, XENT, XSET, decodeDev,
  MIN_DIR_CHUNK_LEN, dirChunkCount, dirChunkLen, dirPos, dtypeOfMode, fileTypeOfDtype, inodeOffset, inodesSectionSize,
  MAX_DIR_BYTES, MAX_XATTR_OVERLAY_NAME_LEN, XATTR_OVERLAY_PREFIX, type LayoutValue,
} from './layout.js';
import { fileTypeOf, type FileType, type TreeNode } from './tree.js';

/** A blob that is malformed or inconsistent. The message is one line starting "corrupt blob: ". */
export class BlobError extends Error {
  override name = 'BlobError';
  constructor(what: string, prefix = 'corrupt blob: ') {
    super(prefix + what);
  }
}

/** A well-formed blob of a format version this reader does not read (not corruption). */
function versionError(major: number): BlobError {
  const why = major < VERSION_MAJOR ? 'rebuild the blob with this cfs' : 'this cfs is too old for it';
  return new BlobError(`format version ${major}: ${why} (it reads version ${VERSION_MAJOR})`, '');
}

// ---------------------------------------------------------------------------------------------
// Sources

/** Random access to the blob's bytes. read() returns exactly `length` bytes or throws. */
export interface BlobSource {
  size: number;
  read(offset: number, length: number): Buffer;
  close?(): void;
}

function checkRange(size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new BlobError(`read of ${length} bytes at ${offset} is outside the ${size}-byte blob`);
  }
}

/** A blob in memory; read() returns views, no copies. */
export function sourceFromBuffer(buf: Buffer): BlobSource {
  return {
    size: buf.length,
    read(offset, length) {
      checkRange(buf.length, offset, length);
      return buf.subarray(offset, offset + length);
    },
  };
}

export interface FileBlobSource extends BlobSource {
  close(): void;
}

/**
 * A blob file read with pread through a small LRU cache of 4 KiB pages (reads inside one page
 * return a view of the cached page; longer reads go to the file directly).
 */
export function sourceFromFile(path: string, cachePages = 256): FileBlobSource {
  const fd = openSync(path, 'r');
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  const cache = new Map<number, Buffer>();
  let closed = false;

  const readExact = (offset: number, length: number): Buffer => {
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, out, done, length - done, offset + done);
      if (n === 0) throw new BlobError(`blob file ended at ${offset + done}, expected ${size} bytes`);
      done += n;
    }
    return out;
  };

  const page = (index: number): Buffer => {
    let p = cache.get(index);
    if (p !== undefined) {
      cache.delete(index); // re-insert as most recently used
      cache.set(index, p);
      return p;
    }
    const start = index * BLOCK_SIZE;
    p = readExact(start, Math.min(BLOCK_SIZE, size - start));
    cache.set(index, p);
    if (cache.size > cachePages) cache.delete(cache.keys().next().value!);
    return p;
  };

  return {
    size,
    read(offset, length) {
      if (closed) throw new Error('blob source is closed');
      checkRange(size, offset, length);
      const first = Math.floor(offset / BLOCK_SIZE);
      if (length > 0 && Math.floor((offset + length - 1) / BLOCK_SIZE) === first) {
        const at = offset - first * BLOCK_SIZE;
        return page(first).subarray(at, at + length);
      }
      return readExact(offset, length);
    },
    close() {
      if (!closed) {
        closed = true;
        cache.clear();
        closeSync(fd);
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Parsed records

export interface SectionInfo {
  offset: number;
  size: number;
  count: number;
  crc: number;
}

export interface BlobHeader {
  versionMajor: number;
  versionMinor: number;
  headerSize: number;
  blockSizeLog2: number;
  featureCompat: number;
  featureRoCompat: number;
  featureIncompat: number;
  inlineThreshold: number;
  blobSize: number;
  rootIno: number;
  inodeCount: number;
  direntCount: number;
  dataBytes: number;
  /** Indexed by section id (SectionId), SECTION_COUNT entries. */
  sections: SectionInfo[];
}

export interface Inode {
  /** Inode index (st_ino is index + 1). */
  index: number;
  mode: number;
  type: FileType;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** 0: none, else 1-based index into XATTR_INDEX. */
  xattrSet: number;
  aux: number;
  layout: LayoutValue;
  payload: number;
  /** Bytes at `payload` for INLINE and DIR layouts (not stored: it is `size`), else 0. */
  payloadLen: number;
  /** Directories: parent inode index (aux). */
  parent?: number;
  /** Character and block devices, decoded from aux. */
  rdevMajor?: number;
  rdevMinor?: number;
}

export interface DirEntry {
  /** Binary string. */
  name: string;
  ino: number;
  dtype: number;
  /** Readdir position of the entry after this one. */
  nextPos: number;
}

export interface WalkEntry {
  /** "/" for the root, else "/a/b" (binary string). */
  path: string;
  ino: number;
  inode: Inode;
  /** Entry name ('' for the root) and the directory holding it (the root's is itself). */
  name: string;
  parent: number;
}

const TWO32 = 0x1_0000_0000;
/** Largest high word for which hi * 2^32 + lo stays a safe integer. */
const MAX_SAFE_HI = 0x1fffff;

function u64(buf: Buffer, at: number, what: string): number {
  const hi = buf.readUInt32LE(at + 4);
  if (hi > MAX_SAFE_HI) throw new BlobError(`${what} is too large`);
  return hi * TWO32 + buf.readUInt32LE(at);
}

const SEC_HI_BITS = MTIME_SEC_BITS - 32;
const SEC_SIGN = 2 ** (MTIME_SEC_BITS - 1);

/** ub_inode.mtime: 34-bit two's complement seconds in bits 0..33, nanoseconds in bits 34..63. */
function readMtime(buf: Buffer, at: number): { sec: number; nsec: number } {
  const hi = buf.readUInt32LE(at + 4);
  const bits = (hi & ((1 << SEC_HI_BITS) - 1)) * TWO32 + buf.readUInt32LE(at);
  return { sec: bits >= SEC_SIGN ? bits - 2 * SEC_SIGN : bits, nsec: hi >>> SEC_HI_BITS };
}

// ---------------------------------------------------------------------------------------------
// Opening

/** Validate the header and section table (SPEC §3) and return a reader. */
export function openBlob(src: BlobSource): BlobReader {
  if (src.size < BLOCK_SIZE) throw new BlobError(`blob of ${src.size} bytes is smaller than the header page`);
  const h = src.read(0, HEADER_SIZE);
  if (!h.subarray(0, MAGIC.length).equals(MAGIC)) throw new BlobError('bad magic');
  // The version before the crc (as the C reader): another version's header need not be sealed
  // as ours is. No format ever had version 0: that is corruption.
  const versionMajor = h.readUInt16LE(HDR.versionMajor);
  if (versionMajor === 0) throw new BlobError('version_major 0');
  if (versionMajor !== VERSION_MAJOR) throw versionError(versionMajor);
  const stored = h.readUInt32LE(HDR.headerCrc);
  const copy = Buffer.from(h);
  copy.writeUInt32LE(0, HDR.headerCrc);
  if (crc32c(copy) !== stored) throw new BlobError('header checksum mismatch');

  const headerSize = h.readUInt32LE(HDR.headerSize);
  if (headerSize !== HEADER_SIZE) throw new BlobError(`header_size ${headerSize}, expected ${HEADER_SIZE}`);
  const blockSizeLog2 = h.readUInt32LE(HDR.blockSizeLog2);
  if (blockSizeLog2 !== BLOCK_SIZE_LOG2) throw new BlobError(`block_size_log2 ${blockSizeLog2}, expected ${BLOCK_SIZE_LOG2}`);
  const featureIncompat = h.readUInt32LE(HDR.featureIncompat);
  if ((featureIncompat & ~KNOWN_INCOMPAT) !== 0) {
    throw new BlobError(`unknown incompatible features 0x${featureIncompat.toString(16)}`);
  }
  const inlineThreshold = h.readUInt32LE(HDR.inlineThreshold);
  if (inlineThreshold > MAX_INLINE_SIZE) throw new BlobError(`inline_threshold ${inlineThreshold} exceeds ${MAX_INLINE_SIZE}`);
  const blobSize = u64(h, HDR.blobSize, 'blob_size');
  if (blobSize !== src.size) throw new BlobError(`blob_size ${blobSize} differs from the file size ${src.size}`);
  if (blobSize % BLOCK_SIZE !== 0) throw new BlobError(`blob_size ${blobSize} is not a multiple of ${BLOCK_SIZE}`);

  const sections: SectionInfo[] = [];
  let end = BLOCK_SIZE; // where the previous non-empty section's padded content ends
  for (let id = 0; id < SECTION_SLOTS; id++) {
    const e = SECTION_TABLE_OFFSET + id * SECTION_ENTRY_SIZE;
    if (id >= SECTION_COUNT) {
      if (!h.subarray(e, e + SECTION_ENTRY_SIZE).every((b) => b === 0)) throw new BlobError(`section slot ${id} is not zero`);
      continue;
    }
    const name = SECTION_NAMES[id];
    // Every u64 here is bounded by blob_size below, so a "too large" error is just as right.
    const offset = u64(h, e + SEC.offset, `${name} offset`);
    const size = u64(h, e + SEC.size, `${name} size`);
    const count = u64(h, e + SEC.count, `${name} count`);
    const crc = h.readUInt32LE(e + SEC.crc);
    if (!(size === 0 && offset === 0)) {
      if (offset % BLOCK_SIZE !== 0) throw new BlobError(`${name} offset ${offset} is not page-aligned`);
      if (offset < BLOCK_SIZE) throw new BlobError(`${name} overlaps the header`);
      if (offset + size > blobSize) throw new BlobError(`${name} extends past the end of the blob`);
      if (offset < end) throw new BlobError(`${name} overlaps the previous section or is out of order`);
      end = offset + Math.ceil(size / BLOCK_SIZE) * BLOCK_SIZE;
    }
    // DIRS and DATA are counted in bytes; their count is not tied to their size.
    const recordSize = [0, 0, 0, DIGEST_SIZE, XATTR_SET_SIZE, 0][id];
    if (recordSize !== 0 && size !== count * recordSize) {
      throw new BlobError(`${name} size ${size} is not count ${count} * ${recordSize}`);
    }
    if (id === SectionId.INODES && size !== inodesSectionSize(count)) {
      throw new BlobError(`INODES size ${size} does not hold ${count} inodes of ${INODE_SIZE} bytes, 85 to a page`);
    }
    sections.push({ offset, size, count, crc });
  }

  const inodeCount = u64(h, HDR.inodeCount, 'inode_count');
  if (inodeCount !== sections[SectionId.INODES].count) throw new BlobError('inode_count differs from the INODES count');
  const rootIno = u64(h, HDR.rootIno, 'root_ino');
  if (rootIno >= inodeCount) throw new BlobError(`root_ino ${rootIno} out of range`);

  const header: BlobHeader = {
    versionMajor,
    versionMinor: h.readUInt16LE(HDR.versionMinor),
    headerSize,
    blockSizeLog2,
    featureCompat: h.readUInt32LE(HDR.featureCompat),
    featureRoCompat: h.readUInt32LE(HDR.featureRoCompat),
    featureIncompat,
    inlineThreshold,
    blobSize,
    rootIno,
    inodeCount,
    direntCount: u64(h, HDR.direntCount, 'dirent_count'),
    dataBytes: u64(h, HDR.dataBytes, 'data_bytes'),
    sections,
  };
  const reader = new BlobReader(src, header);
  if (reader.inode(rootIno).type !== 'dir') throw new BlobError('root inode is not a directory');
  return reader;
}

// ---------------------------------------------------------------------------------------------
// Reader

/**
 * One validated directory chunk (SPEC §5): `buf` is exactly the chunk's bytes (its length is the
 * chunk length), entry k's name is buf[nameStart[k], nameEnd[k]).
 */
interface DirChunk {
  buf: Buffer;
  n: number;
  nameStart: Uint16Array;
  nameEnd: Uint16Array;
}

/** Names a chunk in error messages. */
type ChunkWhere = string;

const VALID_DTYPES = new Set<number>(Object.values(DT));

/**
 * Entries in a directory chunk: dirents[0].nameoff / 8, checked (SPEC §5): the chunk holds at
 * least one dirent and one name byte, and the first nameoff is a non-zero multiple of 8 that
 * lies inside the chunk.
 */
function chunkEntryCount(buf: Buffer, where: ChunkWhere): number {
  if (buf.length < MIN_DIR_CHUNK_LEN) throw new BlobError(`${where}: chunk of ${buf.length} bytes is too short`);
  const first = buf.readUInt16LE(DIRENT.nameoff);
  if (first === 0 || first % DIRENT_SIZE !== 0 || first >= buf.length) {
    throw new BlobError(`${where}: invalid first nameoff ${first}`);
  }
  return first / DIRENT_SIZE;
}

/** Start of entry k's name; it must lie in the names area of the chunk. */
function nameStartOf(buf: Buffer, n: number, k: number, where: ChunkWhere): number {
  const start = buf.readUInt16LE(k * DIRENT_SIZE + DIRENT.nameoff);
  if (start < n * DIRENT_SIZE || start >= buf.length) {
    throw new BlobError(`${where}: nameoff of entry ${k} outside the names area`);
  }
  return start;
}

/** End of entry k's name: the next nameoff, or for the last entry the first zero byte / chunk end. */
function nameEndOf(buf: Buffer, n: number, k: number, where: ChunkWhere): number {
  const start = buf.readUInt16LE(k * DIRENT_SIZE + DIRENT.nameoff);
  let end: number;
  if (k + 1 < n) {
    end = buf.readUInt16LE((k + 1) * DIRENT_SIZE + DIRENT.nameoff);
    if (end <= start || end > buf.length) {
      throw new BlobError(`${where}: nameoffs not increasing at entry ${k + 1}`);
    }
  } else {
    end = start;
    const limit = Math.min(buf.length, start + MAX_NAME_LEN + 1);
    while (end < limit && buf[end] !== 0) end++;
  }
  const len = end - start;
  if (len < 1 || len > MAX_NAME_LEN) throw new BlobError(`${where}: entry ${k} has a name of ${len} bytes`);
  return end;
}

/** memcmp order of a[as, ae) and b[bs, be); a shorter prefix sorts first. */
function compareRanges(a: Uint8Array, as: number, ae: number, b: Uint8Array, bs: number, be: number): number {
  const la = ae - as;
  const lb = be - bs;
  const n = la < lb ? la : lb;
  for (let i = 0; i < n; i++) {
    const d = a[as + i] - b[bs + i];
    if (d !== 0) return d;
  }
  return la - lb;
}

function compareName(buf: Buffer, start: number, end: number, key: Buffer): number {
  return compareRanges(buf, start, end, key, 0, key.length);
}

function chunkWhere(dir: Inode, c: number): ChunkWhere {
  return `directory inode ${dir.index} chunk ${c}`;
}

export class BlobReader {
  readonly src: BlobSource;
  readonly header: BlobHeader;
  private readonly sec: SectionInfo[];
  /** One-chunk cache for readdir: DIRS byte offset and length of the chunk, and the chunk. */
  private lastChunkAt = -1;
  private lastChunkLen = -1;
  private lastChunk: DirChunk | undefined;

  constructor(src: BlobSource, header: BlobHeader) {
    this.src = src;
    this.header = header;
    this.sec = header.sections;
  }

  close(): void {
    this.src.close?.();
  }

  get rootIno(): number {
    return this.header.rootIno;
  }

  /** Parse and validate inode `i` (SPEC §4 combinations). */
  inode(i: number): Inode {
    const { inodeCount } = this.header;
    if (!Number.isInteger(i) || i < 0 || i >= inodeCount) throw new BlobError(`inode index ${i} out of range`);
    const b = this.src.read(this.sec[SectionId.INODES].offset + inodeOffset(i), INODE_SIZE);
    const bad = (why: string) => new BlobError(`inode ${i}: ${why}`);
    const mode = b.readUInt16LE(INO.mode);
    if (dtypeOfMode(mode) === 0) throw bad(`invalid mode 0${mode.toString(8)}`);
    if (b[INO.reserved] !== 0) throw bad('reserved byte is not zero');
    const type = fileTypeOf(mode);
    const size = u64(b, INO.size, `inode ${i}: size`);
    const { sec: mtimeSec, nsec: mtimeNsec } = readMtime(b, INO.mtime);
    if (mtimeNsec > MAX_NSEC) throw bad(`mtime nanoseconds ${mtimeNsec} out of range`);
    const xattrSet = b.readUInt32LE(INO.xattrSet);
    if (xattrSet > this.sec[SectionId.XATTR_INDEX].count) throw bad(`xattr_set ${xattrSet} out of range`);
    const aux = b.readUInt32LE(INO.aux);
    const layout = b[INO.layout] as LayoutValue;
    const payload = u64(b, INO.payload, `inode ${i}: payload`);
    // Inline items and directory data are `size` bytes long (checked below).
    const payloadLen = layout === Layout.INLINE || layout === Layout.DIR ? size : 0;
    const inode: Inode = {
      index: i, mode, type, nlink: b.readUInt32LE(INO.nlink), uid: b.readUInt32LE(INO.uid), gid: b.readUInt32LE(INO.gid),
      size, mtimeSec, mtimeNsec, xattrSet, aux, layout, payload, payloadLen,
    };

    const none = () => {
      if (layout !== Layout.NONE) throw bad(`layout ${layout} is invalid for a ${type}`);
      if (payload !== 0) throw bad('payload set without a payload');
    };
    const inlineItem = (max: number) => {
      if (size < 1 || size > max) throw bad(`inline size ${size} out of range`);
      if (payload + size > this.sec[SectionId.DATA].size) throw bad('inline data outside DATA');
      // Items never cross a page of the blob; DATA starts on a page, so offsets inside it line up.
      if (Math.floor(payload / BLOCK_SIZE) !== Math.floor((payload + size - 1) / BLOCK_SIZE)) {
        throw bad('inline data crosses a page');
      }
    };
    switch (type) {
      case 'reg':
        if (aux !== 0) throw bad('aux set on a regular file');
        if (layout === Layout.NONE) {
          none();
          if (size !== 0) throw bad('non-empty regular file without payload');
        } else if (layout === Layout.INLINE) {
          inlineItem(MAX_INLINE_SIZE);
        } else if (layout === Layout.EXTERNAL) {
          if (size < 1) throw bad('external file of size 0');
          if (payload >= this.sec[SectionId.DIGESTS].count) throw bad(`digest index ${payload} out of range`);
        } else {
          throw bad(`layout ${layout} is invalid for a regular file`);
        }
        break;
      case 'lnk':
        if (layout !== Layout.INLINE) throw bad(`layout ${layout} is invalid for a symlink`);
        if (aux !== 0) throw bad('aux set on a symlink');
        inlineItem(MAX_SYMLINK_LEN);
        break;
      case 'dir':
        if (layout !== Layout.DIR) throw bad(`layout ${layout} is invalid for a directory`);
        if (size > MAX_DIR_BYTES) throw bad(`directory of ${size} bytes`);
        if (payloadLen === 0) {
          if (payload !== 0) throw bad('empty directory with a payload offset');
        } else {
          if (payload + payloadLen > this.sec[SectionId.DIRS].size) throw bad('directory data outside DIRS');
          // DIRS starts on a page, so offsets inside it line up with the blob's pages.
          if (payloadLen > DIR_CHUNK_SIZE) {
            if (payload % BLOCK_SIZE !== 0) throw bad('directory of more than 4096 bytes does not start on a page');
          } else if ((payload % BLOCK_SIZE) + payloadLen > BLOCK_SIZE) {
            throw bad('directory data crosses a page');
          }
        }
        if (aux >= inodeCount) throw bad(`parent ${aux} out of range`);
        inode.parent = aux;
        break;
      case 'chr':
      case 'blk': {
        none();
        if (size !== 0) throw bad('device with a size');
        const dev = decodeDev(aux);
        inode.rdevMajor = dev.major;
        inode.rdevMinor = dev.minor;
        break;
      }
      default: // fifo, sock
        none();
        if (size !== 0) throw bad(`${type} with a size`);
        if (aux !== 0) throw bad(`aux set on a ${type}`);
    }
    return inode;
  }

  private dirInode(dirIno: number): Inode {
    const dir = this.inode(dirIno);
    if (dir.type !== 'dir') throw new Error(`inode ${dirIno} is not a directory`);
    return dir;
  }

  /** Read and fully validate chunk `c` of directory `dir` (SPEC §5); used by readdir. */
  private chunk(dir: Inode, c: number): DirChunk {
    const at = dir.payload + c * DIR_CHUNK_SIZE;
    const len = dirChunkLen(dir.payloadLen, c);
    if (at === this.lastChunkAt && len === this.lastChunkLen && this.lastChunk) return this.lastChunk;
    const where = chunkWhere(dir, c);
    const buf = this.chunkBytes(dir, c);
    const bad = (why: string) => new BlobError(`${where}: ${why}`);
    const n = chunkEntryCount(buf, where);
    const nameStart = new Uint16Array(n);
    const nameEnd = new Uint16Array(n);
    for (let k = 0; k < n; k++) {
      const d = k * DIRENT_SIZE;
      const start = nameStartOf(buf, n, k, where);
      const end = nameEndOf(buf, n, k, where);
      this.entryIno(buf, k, where);
      if (!VALID_DTYPES.has(buf[d + DIRENT.fileType])) throw bad(`entry ${k} has an invalid file type`);
      // Names hold no '/' or NUL, are not "." or "..", and increase strictly.
      for (let j = start; j < end; j++) {
        if (buf[j] === 0x2f || buf[j] === 0) throw bad(`entry ${k} has a name containing "/" or NUL`);
      }
      const len = end - start;
      if (buf[start] === 0x2e && (len === 1 || (len === 2 && buf[start + 1] === 0x2e))) throw bad(`entry ${k} is "." or ".."`);
      if (k > 0 && compareRanges(buf, nameStart[k - 1], nameEnd[k - 1], buf, start, end) >= 0) {
        throw bad(`names not in increasing order at entry ${k}`);
      }
      nameStart[k] = start;
      nameEnd[k] = end;
    }
    const chunk: DirChunk = { buf, n, nameStart, nameEnd };
    this.lastChunkAt = at;
    this.lastChunkLen = len;
    this.lastChunk = chunk;
    return chunk;
  }

  /**
   * Look `name` (Buffer or binary string) up in directory `dirIno`; undefined when absent.
   * Binary search over the chunks by their first name, then inside one chunk. Only the entries
   * probed are validated (as the kernel does), so a lookup costs O(log) work per page.
   */
  lookup(dirIno: number, name: Buffer | string): number | undefined {
    const dir = this.dirInode(dirIno);
    const key = typeof name === 'string' ? Buffer.from(name, 'latin1') : name;
    if (dir.payloadLen === 0 || key.length < 1 || key.length > MAX_NAME_LEN) return undefined;
    // Last chunk whose first name <= key.
    let lo = 0;
    let hi = dirChunkCount(dir.payloadLen) - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const where = chunkWhere(dir, mid);
      const buf = this.chunkBytes(dir, mid);
      const n = chunkEntryCount(buf, where);
      const c = compareName(buf, nameStartOf(buf, n, 0, where), nameEndOf(buf, n, 0, where), key);
      if (c === 0) return this.entryIno(buf, 0, where);
      if (c < 0) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (found < 0) return undefined;
    const where = chunkWhere(dir, found);
    const buf = this.chunkBytes(dir, found);
    const n = chunkEntryCount(buf, where);
    let l = 1; // entry 0 was compared above
    let h = n - 1;
    while (l <= h) {
      const mid = (l + h) >>> 1;
      const c = compareName(buf, nameStartOf(buf, n, mid, where), nameEndOf(buf, n, mid, where), key);
      if (c === 0) return this.entryIno(buf, mid, where);
      if (c < 0) l = mid + 1;
      else h = mid - 1;
    }
    return undefined;
  }

  /** The bytes of chunk `c` of a directory whose payload inode() validated (exactly the chunk's length). */
  private chunkBytes(dir: Inode, c: number): Buffer {
    if (!Number.isInteger(c) || c < 0 || c >= dirChunkCount(dir.payloadLen)) {
      throw new Error(`directory inode ${dir.index}: chunk ${c} out of range`);
    }
    return this.src.read(this.sec[SectionId.DIRS].offset + dir.payload + c * DIR_CHUNK_SIZE, dirChunkLen(dir.payloadLen, c));
  }

  private entryIno(buf: Buffer, k: number, where: ChunkWhere): number {
    const ino = buf.readUInt32LE(k * DIRENT_SIZE + DIRENT.ino);
    if (ino >= this.header.inodeCount) throw new BlobError(`${where}: entry ${k} names inode out of range`);
    return ino;
  }

  /**
   * Entries of directory `dirIno` from readdir position `pos` (SPEC §5): 0 is ".", 1 is "..",
   * 2 + c * 4096 + k * 8 is entry k of chunk c; a position between entries resumes at the
   * next one. Names increase strictly across chunks too (checked).
   */
  *readdir(dirIno: number, pos = 2): Generator<DirEntry> {
    if (!Number.isSafeInteger(pos) || pos < 0) throw new RangeError(`invalid readdir position ${pos}`);
    const dir = this.dirInode(dirIno);
    if (pos === 0) yield { name: '.', ino: dirIno, dtype: DT.DIR, nextPos: 1 };
    if (pos <= 1) {
      yield { name: '..', ino: dir.aux, dtype: DT.DIR, nextPos: 2 };
      pos = 2;
    }
    const rel = pos - 2;
    const chunks = dirChunkCount(dir.payloadLen);
    let c = Math.floor(rel / DIR_CHUNK_SIZE);
    let k = Math.ceil((rel % DIR_CHUNK_SIZE) / DIRENT_SIZE);
    let prev: Buffer | undefined;
    // Resuming in the middle: the previous chunk's last name is not re-checked against this one.
    for (; c < chunks; c++, k = 0) {
      const b = this.chunk(dir, c);
      if (prev !== undefined && compareRanges(prev, 0, prev.length, b.buf, b.nameStart[0], b.nameEnd[0]) >= 0) {
        throw new BlobError(`directory inode ${dirIno}: names not increasing across chunks`);
      }
      for (; k < b.n; k++) {
        const d = k * DIRENT_SIZE;
        const last = k + 1 === b.n;
        yield {
          name: b.buf.toString('latin1', b.nameStart[k], b.nameEnd[k]),
          ino: b.buf.readUInt32LE(d + DIRENT.ino),
          dtype: b.buf[d + DIRENT.fileType],
          nextPos: last ? dirPos(c + 1, 0) : dirPos(c, k + 1),
        };
      }
      // The chunk may have been evicted from the one-chunk cache while the caller worked.
      prev = Buffer.from(b.buf.subarray(b.nameStart[b.n - 1], b.nameEnd[b.n - 1]));
    }
  }

  /** Symlink target (binary string). */
  readlink(i: number): string {
    return this.linkTargetOf(this.inode(i));
  }

  /** readlink() of an inode already read (decodeTree: each inode is parsed once). */
  linkTargetOf(inode: Inode): string {
    const i = inode.index;
    if (inode.type !== 'lnk') throw new Error(`inode ${i} is not a symlink`);
    const bytes = this.dataItem(inode);
    if (bytes.includes(0)) throw new BlobError(`inode ${i}: symlink target contains NUL`);
    return bytes.toString('latin1');
  }

  /** Content of an inline regular file (a copy). */
  readInline(i: number): Buffer {
    return this.inlineOf(this.inode(i));
  }

  /** readInline() of an inode already read. */
  inlineOf(inode: Inode): Buffer {
    if (inode.type !== 'reg' || inode.layout !== Layout.INLINE) throw new Error(`inode ${inode.index} is not an inline file`);
    return Buffer.from(this.dataItem(inode));
  }

  private dataItem(inode: Inode): Buffer {
    // inode() checked payload + payloadLen against DATA.
    return this.src.read(this.sec[SectionId.DATA].offset + inode.payload, inode.payloadLen);
  }

  /** Digest `idx` of DIGESTS (a copy). */
  digest(idx: number): Buffer {
    if (!Number.isInteger(idx) || idx < 0 || idx >= this.sec[SectionId.DIGESTS].count) {
      throw new BlobError(`digest index ${idx} out of range`);
    }
    return Buffer.from(this.src.read(this.sec[SectionId.DIGESTS].offset + idx * DIGEST_SIZE, DIGEST_SIZE));
  }

  /**
   * Every digest of DIGESTS as lowercase hex, in index order, read a chunk of the section at a
   * time (gc and the snapshotter's Cleanup list every blob's digests: one read per digest
   * through a file source cost ~3 us each).
   */
  *digestsHex(): Generator<string> {
    const { offset, count } = this.sec[SectionId.DIGESTS]; // openBlob checked size == count * 32
    const PER_READ = 32768;
    for (let k = 0; k < count; k += PER_READ) {
      const n = Math.min(PER_READ, count - k);
      const hex = this.src.read(offset + k * DIGEST_SIZE, n * DIGEST_SIZE).toString('hex');
      for (let j = 0; j < n; j++) yield hex.slice(j * 2 * DIGEST_SIZE, (j + 1) * 2 * DIGEST_SIZE);
    }
  }

  /** Path of an object in a store: STORE/objects/XX/62hex. */
  objectPath(store: string, digest: Buffer): string {
    return objectPath(store, digest);
  }

  /** Xattrs of inode `i`: full name (binary string) -> value (copy), in name order. */
  xattrs(i: number): Map<string, Buffer> {
    return this.xattrsOf(this.inode(i));
  }

  /** xattrs() of an inode already read. */
  xattrsOf(inode: Inode): Map<string, Buffer> {
    const set = inode.xattrSet;
    const out = new Map<string, Buffer>();
    if (set === 0) return out;
    const index = this.src.read(this.sec[SectionId.XATTR_INDEX].offset + (set - 1) * XATTR_SET_SIZE, XATTR_SET_SIZE);
    const bad = (why: string) => new BlobError(`xattr set ${set}: ${why}`);
    const offset = u64(index, XSET.offset, `xattr set ${set}: offset`);
    const size = index.readUInt32LE(XSET.size);
    const count = index.readUInt16LE(XSET.count);
    if (count === 0) throw bad('empty set');
    if (offset + size > this.sec[SectionId.XATTR_DATA].size) throw bad('outside XATTR_DATA');
    const data = this.src.read(this.sec[SectionId.XATTR_DATA].offset + offset, size);
    let at = 0;
    let prev: string | undefined;
    for (let k = 0; k < count; k++) {
      if (at + XATTR_ENTRY_HEADER_SIZE > size) throw bad(`entry ${k} outside the set`);
      const prefixId = data[at + XENT.prefix];
      const suffixLen = data[at + XENT.suffixLen];
      const valueLen = data.readUInt32LE(at + XENT.valueLen);
      if (prefixId >= XATTR_PREFIXES.length) throw bad(`entry ${k} has unknown prefix ${prefixId}`);
      if (valueLen > MAX_XATTR_VALUE_LEN) throw bad(`entry ${k} has a value of ${valueLen} bytes`);
      at += XATTR_ENTRY_HEADER_SIZE;
      if (at + suffixLen + valueLen > size) throw bad(`entry ${k} outside the set`);
      const name = XATTR_PREFIXES[prefixId] + data.toString('latin1', at, at + suffixLen);
      if (name.length < 1 || name.length > MAX_XATTR_NAME_LEN) throw bad(`entry ${k} has a name of ${name.length} bytes`);
      if (name.includes('\0')) throw bad(`entry ${k} has a name containing NUL`);
      // the encoder refuses longer ones: a mount shows them escaped, past 255 bytes
      if (name.length > MAX_XATTR_OVERLAY_NAME_LEN && name.startsWith(XATTR_OVERLAY_PREFIX)) {
        throw bad(`entry ${k} is a ${XATTR_OVERLAY_PREFIX}* name of ${name.length} bytes`);
      }
      if (prev !== undefined && !(prev < name)) throw bad(`names not in increasing order at entry ${k}`);
      at += suffixLen;
      out.set(name, Buffer.from(data.subarray(at, at + valueLen)));
      at += valueLen;
      prev = name;
    }
    if (at !== size) throw bad('entries do not fill the set exactly');
    return out;
  }

  /** Inode index of an absolute or root-relative path; undefined when a component is missing. No symlink following. */
  resolvePath(path: string): number | undefined {
    let ino = this.header.rootIno;
    for (const part of path.split('/')) {
      if (part === '' || part === '.') continue;
      const dir = this.inode(ino);
      if (dir.type !== 'dir') return undefined;
      if (part === '..') {
        ino = dir.aux;
        continue;
      }
      const next = this.lookup(ino, part);
      if (next === undefined) return undefined;
      ino = next;
    }
    return ino;
  }

  /**
   * Depth-first walk (children in name order, the root first). Checks every dirent's file type
   * against its inode and every directory's parent field, and stops with a BlobError when a
   * directory is reached twice (a cycle). Iterative: depth costs no JS stack.
   */
  *walk(): Generator<WalkEntry> {
    const root = this.header.rootIno;
    const rootInode = this.inode(root);
    if (rootInode.type !== 'dir') throw new BlobError('root inode is not a directory');
    if (rootInode.aux !== root) throw new BlobError('root directory is not its own parent');
    yield { path: '/', ino: root, inode: rootInode, name: '', parent: root };
    const seenDirs = new Set<number>([root]);
    const stack: { ino: number; path: string; entries: Generator<DirEntry> }[] = [
      { ino: root, path: '', entries: this.readdir(root) },
    ];
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      const step = top.entries.next();
      if (step.done) {
        stack.pop();
        continue;
      }
      const { name, ino, dtype } = step.value;
      const inode = this.inode(ino);
      const path = `${top.path}/${name}`;
      if (fileTypeOfDtype(dtype) !== inode.type) {
        throw new BlobError(`file type of dirent ${JSON.stringify(path)} differs from inode ${ino}`);
      }
      if (inode.type === 'dir') {
        if (seenDirs.has(ino)) throw new BlobError(`directory inode ${ino} reached twice (at ${JSON.stringify(path)})`);
        seenDirs.add(ino);
        if (inode.aux !== top.ino) throw new BlobError(`directory inode ${ino} has parent ${inode.aux}, found in ${top.ino}`);
      }
      yield { path, ino, inode, name, parent: top.ino };
      if (inode.type === 'dir') stack.push({ ino, path, entries: this.readdir(ino) });
    }
  }

  /** fsck: recompute every section's CRC-32C. Throws BlobError naming the first bad section. */
  checkSections(): void {
    for (let id = 0; id < SECTION_COUNT; id++) {
      const s = this.sec[id];
      let crc = 0;
      const chunk = 1 << 20;
      for (let at = 0; at < s.size; at += chunk) {
        crc = crc32c(this.src.read(s.offset + at, Math.min(chunk, s.size - at)), crc);
      }
      if (crc !== s.crc) throw new BlobError(`${SECTION_NAMES[id]} checksum mismatch`);
    }
  }
}

/** Path of an object in a store: STORE/objects/XX/YYYY (lowercase hex, composefs layout). */
export function objectPath(store: string, digest: Buffer): string {
  if (digest.length !== DIGEST_SIZE) throw new Error(`digest must be ${DIGEST_SIZE} bytes`);
  const hex = digest.toString('hex');
  return join(store, 'objects', hex.slice(0, 2), hex.slice(2));
}

// ---------------------------------------------------------------------------------------------
// Whole tree

/**
 * Rebuild the whole tree. Hardlinks become one shared TreeNode; `size` is 0 for directories,
 * devices, fifos and sockets; rdev fields exist only on devices; an empty regular file has
 * neither `inline` nor `digest`; children and xattr Maps are in byte order.
 */
export function decodeTree(reader: BlobReader): TreeNode {
  // inode numbers are dense (0..inode_count-1): an array, not a Map (a third of the time for 200k inodes)
  const byIno: (TreeNode | undefined)[] = new Array(reader.header.inodeCount);
  let root: TreeNode | undefined;
  for (const { ino, inode, name, parent } of reader.walk()) {
    let node = byIno[ino];
    if (node === undefined) {
      node = nodeOf(reader, inode);
      byIno[ino] = node;
    }
    if (root === undefined) root = node;
    else byIno[parent]!.children!.set(name, node);
  }
  return root!;
}

/** The TreeNode of one inode (a directory's children Map empty). */
export function nodeOf(reader: BlobReader, inode: Inode): TreeNode {
  const node: TreeNode = {
    mode: inode.mode,
    uid: inode.uid,
    gid: inode.gid,
    mtimeSec: inode.mtimeSec,
    mtimeNsec: inode.mtimeNsec,
    xattrs: reader.xattrsOf(inode),
    size: 0,
  };
  switch (inode.type) {
    case 'reg':
      node.size = inode.size;
      if (inode.layout === Layout.INLINE) node.inline = reader.inlineOf(inode);
      else if (inode.layout === Layout.EXTERNAL) node.digest = reader.digest(inode.payload);
      break;
    case 'lnk':
      node.target = reader.linkTargetOf(inode);
      node.size = node.target.length;
      break;
    case 'dir':
      node.children = new Map();
      break;
    case 'chr':
    case 'blk':
      node.rdevMajor = inode.rdevMajor;
      node.rdevMinor = inode.rdevMinor;
      break;
  }
  return node;
}
