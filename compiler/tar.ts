// Streaming tar reader for image layers (and the header parser used to index image archives).
//
// We do not use tar-stream for reading: its PAX decoder turns every value into a UTF-8 string,
// which destroys binary `SCHILY.xattr.security.capability` values and names that are not
// valid UTF-8. Here every name is a latin1 "binary string" (one char per byte, see
// format/tree.ts) and every xattr value stays a Buffer.
//
// Supported: ustar (+ prefix), GNU magic, v7; PAX local ('x') and global ('g') headers with
// path, linkpath, size, uid, gid, mtime (fractional), SCHILY.xattr.*, LIBARCHIVE.xattr.*,
// SCHILY.devmajor/devminor; GNU long name/link ('L'/'K'); base-256 numbers; checksum
// validation; sparse files in all of GNU tar's forms (old GNU 'S' headers, PAX 0.0, 0.1 and 1.0),
// read as Go's archive/tar reads them and handed out expanded (holes as runs of zeros).
// Refused with an error: multi-volume and other unknown types.

import {
  addSparseRecord, checkRuns, mapBlock, newMap1Parser, newRuns, oldGnuRuns, paxSparse, type Runs,
} from './sparse-map.js';

export const BLOCK = 512;
/** Sparse files: holes smaller than this go out as zeros among the data around them, ... */
const HOLE_PIECE_MIN = 64 << 10;
/** ... gathered in buffers of this size. */
const GATHER = 1 << 20;

export type EntryType = 'file' | 'hardlink' | 'symlink' | 'chr' | 'blk' | 'dir' | 'fifo';

export interface TarEntry {
  /** Path as stored (binary string), not normalized. */
  path: string;
  type: EntryType;
  /** Permission bits (07777) from the header. */
  mode: number;
  uid: number;
  gid: number;
  /** Size of the entry's body in the archive. */
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Hardlink or symlink target (binary string). */
  linkpath: string;
  devmajor: number;
  devminor: number;
  /** xattr name (binary string) -> value; NO_XATTRS (shared, read-only) when there are none. */
  xattrs: Map<string, Buffer>;
}

/** A tar header block decoded into fields, before PAX/GNU extensions are applied. */
export interface RawHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  devmajor: number;
  devminor: number;
}

export class TarFormatError extends Error {}

/** A piece of an entry's body: bytes, or (only in a sparse file) a hole of that many zero bytes. */
export type BodyPiece = Buffer | number;

/**
 * The xattrs of every entry that has none: one shared, read-only map (a fresh Map per entry
 * costs ~100 bytes per inode of a million-file image).
 */
class NoXattrs extends Map<string, Buffer> {
  override set(): this {
    throw new Error('the shared empty xattr map is read-only; assign a new Map instead');
  }
  override delete(): boolean {
    return false;
  }
}
export const NO_XATTRS: ReadonlyMap<string, Buffer> = new NoXattrs();

export function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** Bytes of `b[start, start+len)` up to the first NUL, as a binary string. */
function cString(b: Buffer, start: number, len: number): string {
  let end = start;
  const limit = start + len;
  while (end < limit && b[end] !== 0) end++;
  return b.toString('latin1', start, end);
}

/** A numeric header field: octal ASCII (spaces/NULs around it), or base-256 when the top bit is set. */
export function parseNumeric(b: Buffer, start: number, len: number, field: string): number {
  const first = b[start];
  if (first & 0x80) return parseBase256(b, start, len, field);
  let i = start;
  const end = start + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = b[i];
    if (c === 0) return digits === 0 ? 0 : v; // Go reads up to the first NUL, whatever follows it
    if (c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new TarFormatError(`invalid octal number in ${field} field`);
    v = v * 8 + (c - 0x30);
    digits++;
  }
  // Only trailing spaces/NULs may follow the digits.
  for (; i < end; i++) {
    if (b[i] !== 0x20 && b[i] !== 0) throw new TarFormatError(`invalid octal number in ${field} field`);
  }
  return digits === 0 ? 0 : v;
}

/** GNU/star base-256: big-endian two's complement in the field, first byte's 0x80 is the marker. */
function parseBase256(b: Buffer, start: number, len: number, field: string): number {
  const negative = (b[start] & 0x40) !== 0;
  let v = BigInt(b[start] & 0x3f) - (negative ? 0x40n : 0n);
  for (let i = start + 1; i < start + len; i++) v = (v << 8n) | BigInt(b[i]);
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
    throw new TarFormatError(`base-256 number in ${field} field out of range`);
  }
  return Number(v);
}

function checksumMatches(b: Buffer): boolean {
  const stored = parseNumeric(b, 148, 8, 'checksum');
  // The checksum is computed with its own field read as 8 spaces.
  const sum = byteSum(b) - byteSum8(b, 148) + 8 * 0x20;
  if (stored === sum) return true;
  // Some old tars summed signed chars; accept that too, as GNU tar does.
  let high = 0;
  for (let i = 0; i < BLOCK; i++) if ((i < 148 || i >= 156) && b[i] > 127) high++;
  return stored === sum - 256 * high;
}

/** A 4-aligned copy of the header being summed (a header may sit anywhere in a chunk). */
const sumScratch = new Uint8Array(BLOCK);
const sumWords = new Uint32Array(sumScratch.buffer);

/**
 * Sum of the 512 bytes of a header block, four at a time: each 32-bit word adds its bytes
 * pairwise into two 16-bit lanes (at most 2 * 255 * 128 = 65,280 per lane: no carry between
 * them). A million-entry layer otherwise spends ~0.7 s of the parsing thread here.
 */
function byteSum(b: Buffer): number {
  sumScratch.set(b.subarray(0, BLOCK));
  let lanes = 0;
  for (let i = 0; i < BLOCK / 4; i++) {
    const w = sumWords[i];
    lanes += (w & 0x00ff00ff) + ((w >>> 8) & 0x00ff00ff);
  }
  return (lanes & 0xffff) + (lanes >>> 16);
}

function byteSum8(b: Buffer, at: number): number {
  let sum = 0;
  for (let i = at; i < at + 8; i++) sum += b[i];
  return sum;
}

/** Decode one non-zero header block; throws TarFormatError on a bad checksum or field. */
export function parseHeader(b: Buffer): RawHeader {
  if (!checksumMatches(b)) throw new TarFormatError('bad tar header checksum (corrupt archive?)');
  const magic = b.toString('latin1', 257, 263);
  const ustar = magic === 'ustar\0';
  let name = cString(b, 0, 100);
  // The prefix field exists only in POSIX ustar; GNU tars store atime/ctime there.
  if (ustar && b[345] !== 0) name = cString(b, 345, 155) + '/' + name;
  const typeByte = b[156];
  return {
    name,
    mode: parseNumeric(b, 100, 8, 'mode'),
    uid: parseNumeric(b, 108, 8, 'uid'),
    gid: parseNumeric(b, 116, 8, 'gid'),
    size: parseNumeric(b, 124, 12, 'size'),
    mtime: parseNumeric(b, 136, 12, 'mtime'),
    typeflag: String.fromCharCode(typeByte),
    linkname: cString(b, 157, 100),
    devmajor: magic.startsWith('ustar') ? parseNumeric(b, 329, 8, 'devmajor') : 0,
    devminor: magic.startsWith('ustar') ? parseNumeric(b, 337, 8, 'devminor') : 0,
  };
}

export interface PaxRecord {
  key: string;
  value: Buffer;
}

/** PAX records whose value may not hold a NUL byte (Go's validPAXRecord). */
const NUL_FREE_VALUES = new Set(['path', 'linkpath', 'uname', 'gname']);

/** Split a PAX extended header body into records ("<len> <key>=<value>\n"), values as bytes. */
export function parsePaxRecords(body: Buffer): PaxRecord[] {
  const out: PaxRecord[] = [];
  let pos = 0;
  // As Go's parsePAX: every byte of the body is records (NUL padding is an error), a key has no
  // NUL, and path, linkpath, uname and gname values have none either (validPAXRecord).
  while (pos < body.length) {
    let sp = pos;
    let len = 0;
    while (sp < body.length && body[sp] >= 0x30 && body[sp] <= 0x39) len = len * 10 + (body[sp++] - 0x30);
    if (sp === pos || body[sp] !== 0x20 || len <= sp - pos + 1 || pos + len > body.length || body[pos + len - 1] !== 0x0a) {
      throw new TarFormatError('malformed PAX extended header');
    }
    const eq = body.indexOf(0x3d, sp + 1);
    if (eq < 0 || eq >= pos + len - 1) throw new TarFormatError('malformed PAX extended header record');
    const key = body.toString('latin1', sp + 1, eq);
    const value = body.subarray(eq + 1, pos + len - 1);
    const nulIn = NUL_FREE_VALUES.has(key) ? value.includes(0) : key.includes('\0');
    if (key === '' || nulIn) throw new TarFormatError('malformed PAX extended header record (an empty key or a NUL byte)');
    out.push({ key, value });
    pos += len;
  }
  return out;
}

/** PAX/GNU overrides collected before an entry's own header. */
interface Overrides {
  path?: string;
  linkpath?: string;
  size?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  mtimeNsec?: number;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Buffer>;
  /** GNU.sparse.* records (PAX sparse files), by key without the prefix; 0.0's offset/numbytes in `map0`. */
  sparse?: Map<string, string>;
  sparseMap0?: string[];
}

function parseDecimal(v: Buffer, key: string): number {
  const s = v.toString('latin1', 0, v.length);
  if (!/^[0-9]+$/.test(s)) throw new TarFormatError(`invalid PAX ${key} value`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new TarFormatError(`PAX ${key} value out of range`);
  return n;
}

/** PAX time "[-]sec[.frac]" -> [sec, nsec] with 0 <= nsec < 1e9 (so -1.5 is sec -2, nsec 5e8). */
export function parsePaxTime(v: Buffer): [number, number] {
  const m = /^(-?)([0-9]+)(?:\.([0-9]*))?$/.exec(v.toString('latin1', 0, v.length));
  if (!m) throw new TarFormatError('invalid PAX mtime value');
  let sec = Number(m[2]);
  let nsec = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (!Number.isSafeInteger(sec)) throw new TarFormatError('PAX mtime value out of range');
  if (m[1] === '-') {
    sec = -sec;
    if (nsec !== 0) {
      sec -= 1;
      nsec = 1e9 - nsec;
    }
  }
  return [sec, nsec];
}

/** "%XX"-decode a LIBARCHIVE.xattr name (bytes kept as a binary string). */
function percentDecode(s: string): string {
  return s.replace(/%([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/**
 * The overrides of one PAX extended header. Read as Go's archive/tar reads them (containerd,
 * docker and umoci unpack with it, and an image must not show one tree to them and another to
 * us): a record with an empty value is no record (the header's field stands; POSIX: an empty
 * value deletes the keyword), except an xattr, which containerd sets empty.
 */
function paxOverrides(records: PaxRecord[]): Overrides {
  const o: Overrides = {};
  for (const { key, value } of records) {
    if (key.startsWith('GNU.sparse.')) {
      addSparseRecord((o.sparse ??= new Map()), (o.sparseMap0 ??= []), key.slice(11), value.toString('latin1', 0, value.length));
      continue;
    }
    if (value.length === 0 && !key.startsWith('SCHILY.xattr.')) continue;
    switch (key) {
      case 'path': o.path = value.toString('latin1', 0, value.length); break;
      case 'linkpath': o.linkpath = value.toString('latin1', 0, value.length); break;
      case 'size': o.size = parseDecimal(value, key); break;
      case 'uid': o.uid = parseDecimal(value, key); break;
      case 'gid': o.gid = parseDecimal(value, key); break;
      case 'mtime': [o.mtimeSec, o.mtimeNsec] = parsePaxTime(value); break;
      case 'SCHILY.devmajor': o.devmajor = parseDecimal(value, key); break;
      case 'SCHILY.devminor': o.devminor = parseDecimal(value, key); break;
      default:
        if (key.startsWith('SCHILY.xattr.')) {
          (o.xattrs ??= new Map()).set(key.slice(13), Buffer.from(value));
        } else if (key.startsWith('LIBARCHIVE.xattr.')) {
          const name = percentDecode(key.slice(17));
          // libarchive writes the SCHILY form too; when both are present SCHILY (raw bytes) wins.
          if (!o.xattrs?.has(name)) (o.xattrs ??= new Map()).set(name, Buffer.from(value.toString('latin1', 0, value.length), 'base64'));
        }
      // Everything else (atime, ctime, uname, gname, comment, charset...) does not affect the image.
    }
  }
  return o;
}

/**
 * The extension headers met before an entry, combined as Go's archive/tar does: a second PAX
 * header replaces the first, the last GNU long name (L) and long link (K) win, and they win
 * over the PAX path and linkpath. A global PAX header (g) is read and ignored, as containerd and
 * docker ignore it (umoci refuses it): applying it would give a tree no runtime shows.
 */
class Extensions {
  private pax: Overrides | null = null;
  private longName: string | null = null;
  private longLink: string | null = null;

  /** Takes extension header `h` (x, g, L or K) with its body. */
  add(h: RawHeader, body: Buffer): void {
    // an empty long name or link is none (Go: `if gnuLongName != ""`)
    if (h.typeflag === 'x') this.pax = paxOverrides(parsePaxRecords(body));
    else if (h.typeflag === 'L') this.longName = cString(body, 0, body.length) || null;
    else if (h.typeflag === 'K') this.longLink = cString(body, 0, body.length) || null;
    else if (h.typeflag === 'g') {
      // Go returns a global header as an entry of its own: what came before it applies to nothing
      parsePaxRecords(body); // checked for form, then ignored
      this.pax = this.longName = this.longLink = null;
    }
  }

  /** The overrides for the entry that follows; resets for the next one. */
  take(): Overrides {
    const o: Overrides = this.pax ?? {};
    if (this.longName !== null) o.path = this.longName;
    if (this.longLink !== null) o.linkpath = this.longLink;
    this.pax = this.longName = this.longLink = null;
    return o;
  }
}

const NO_OVERRIDES: Overrides = Object.freeze({}) as Overrides;

/** The magic and version of an old GNU header ("ustar  \0"), the only form 'S' entries have. */
function isGnuHeader(b: Buffer): boolean {
  return b.toString('latin1', 257, 265) === 'ustar  \0';
}

function isExtension(t: string): boolean {
  return t === 'x' || t === 'g' || t === 'L' || t === 'K';
}

const TYPES: Record<string, EntryType> = {
  '0': 'file', '\0': 'file', '7': 'file', S: 'file', '1': 'hardlink', '2': 'symlink', '3': 'chr', '4': 'blk', '5': 'dir', '6': 'fifo',
};

function describeType(t: string): string {
  const c = t.charCodeAt(0);
  return c >= 0x21 && c <= 0x7e ? `'${t}'` : `0x${c.toString(16).padStart(2, '0')}`;
}

function entryType(h: RawHeader, name: string): EntryType {
  // V7 tars (typeflag NUL) mark directories only by a trailing slash; a '0' entry ending in '/'
  // is a regular file, as Go's archive/tar (containerd, umoci, docker) reads it. Test the final
  // name (a PAX path overrides the header's): Go's archive/tar keeps only the ASCII characters
  // of a non-ASCII name in the header, so a header name can end in '/' for a plain file.
  if (h.typeflag === '\0' && name.endsWith('/')) return 'dir';
  const t = TYPES[h.typeflag];
  if (t) return t;
  throw new TarFormatError(`unsupported tar entry type ${describeType(h.typeflag)}`);
}

/** Entry types that never have a body (Go's isHeaderOnlyType): their size field is not skipped. */
const HEADER_ONLY: ReadonlySet<EntryType> = new Set(['hardlink', 'symlink', 'chr', 'blk', 'dir', 'fifo']);

function finishEntry(h: RawHeader, o: Overrides): TarEntry {
  const type = entryType(h, o.path ?? h.name);
  const uid = o.uid ?? h.uid;
  const gid = o.gid ?? h.gid;
  return {
    path: o.path ?? h.name,
    type,
    mode: h.mode & 0o7777,
    uid,
    gid,
    size: HEADER_ONLY.has(type) ? 0 : o.size ?? h.size,
    mtimeSec: o.mtimeSec ?? h.mtime,
    mtimeNsec: o.mtimeNsec ?? 0,
    linkpath: o.linkpath ?? h.linkname,
    devmajor: o.devmajor ?? h.devmajor,
    devminor: o.devminor ?? h.devminor,
    xattrs: o.xattrs ?? (NO_XATTRS as Map<string, Buffer>),
  };
}

/**
 * PAX and GNU long-name headers over 1 MiB are refused, as Go's archive/tar refuses them since
 * 1.19.2 (maxSpecialFileSize: "header field too long"): containerd, docker and umoci would not
 * unpack such a layer. They are held in memory, too.
 */
const MAX_EXTENSION_HEADER = 1 << 20;

function checkExtensionSize(size: number): void {
  if (size > MAX_EXTENSION_HEADER) throw new TarFormatError(`extended header of ${size} bytes is too large`);
}

function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

const EMPTY = Buffer.alloc(0);

/** Pulls exact byte counts out of an async stream of chunks (backpressure comes from pulling). */
class ByteSource {
  private it: AsyncIterator<Buffer>;
  private buf: Buffer = EMPTY;
  private pos = 0;
  /** Bytes handed out or skipped so far. */
  consumed = 0;

  constructor(src: AsyncIterable<Buffer>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    for (;;) {
      const r = await this.it.next();
      if (r.done) return false;
      const chunk = typeof r.value === 'string' ? Buffer.from(r.value, 'latin1') : r.value;
      if (chunk.length === 0) continue;
      this.buf = chunk;
      this.pos = 0;
      return true;
    }
  }

  /** Exactly n bytes; null if the stream ends before the first byte; throws if it ends inside. */
  async read(n: number): Promise<Buffer | null> {
    if (this.buf.length - this.pos >= n) {
      const out = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.consumed += n;
      return out;
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      if (this.pos >= this.buf.length && !(await this.fill())) {
        if (need === n) return null;
        throw new TarFormatError('truncated archive');
      }
      const take = Math.min(need, this.buf.length - this.pos);
      parts.push(this.buf.subarray(this.pos, this.pos + take));
      this.pos += take;
      need -= take;
    }
    this.consumed += n;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
  }

  /** Bytes buffered and not yet handed out. */
  get buffered(): number {
    return this.buf.length - this.pos;
  }

  /** A view of buffered bytes [at, at+n) past the current position, nothing consumed (at + n <= buffered). */
  peek(at: number, n: number): Buffer {
    return this.buf.subarray(this.pos + at, this.pos + at + n);
  }

  /** Exactly n bytes if they are buffered (a view), else undefined and nothing consumed. */
  readSync(n: number): Buffer | undefined {
    if (this.buf.length - this.pos < n) return undefined;
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.consumed += n;
    return out;
  }

  async readExact(n: number): Promise<Buffer> {
    if (n === 0) return EMPTY;
    const b = await this.read(n);
    if (!b) throw new TarFormatError('truncated archive');
    return b;
  }

  /** Yields the next n bytes as they arrive (chunks are not copied). */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    while (n > 0) {
      if (this.pos >= this.buf.length && !(await this.fill())) throw new TarFormatError('truncated archive');
      const take = Math.min(n, this.buf.length - this.pos);
      const out = this.buf.subarray(this.pos, this.pos + take);
      this.pos += take;
      this.consumed += take;
      n -= take;
      yield out;
    }
  }

  async skip(n: number): Promise<void> {
    // Once per entry (body padding): no generator when the bytes are already buffered.
    for (;;) {
      const take = Math.min(n, this.buf.length - this.pos);
      this.pos += take;
      this.consumed += take;
      n -= take;
      if (n === 0) return;
      if (!(await this.fill())) throw new TarFormatError('truncated archive');
    }
  }

  /** Reads and discards everything left (so digests computed upstream see every byte). */
  async drain(): Promise<void> {
    this.consumed += this.buf.length - this.pos;
    this.pos = this.buf.length;
    while (await this.fill()) {
      this.consumed += this.buf.length;
      this.pos = this.buf.length;
    }
  }
}

/**
 * Reads a tar stream entry by entry:
 *
 *   const r = new TarReader(readable);
 *   for (let e; (e = await r.next()); ) { if (...) body = await r.readBody(); }
 *
 * An entry's body may be read with readBody() or bodyChunks() before the next call to next();
 * an unread body is skipped. The archive must end with an end-of-archive (zero) block; whatever
 * follows it is read and discarded, so a hash over the input stream covers every byte.
 */
export class TarReader {
  private src: ByteSource;
  private remaining = 0; // unread body bytes of the current entry
  private padding = 0; // padding after the current entry's body
  /** The current entry's data runs and size when it is a sparse file (the runs' bytes are the body). */
  private sparse: { runs: Runs; size: number } | null = null;
  private done = false;

  constructor(src: AsyncIterable<Buffer>) {
    this.src = new ByteSource(src);
  }

  /** Bytes of the (uncompressed) tar consumed so far. */
  get position(): number {
    return this.src.consumed;
  }

  /**
   * The next entry when its header is buffered already and is a plain one (no PAX/GNU header
   * before it, not the end of the archive); else undefined, nothing consumed: call next().
   * Most entries of a layer come this way, without the promises of next().
   */
  nextSync(): TarEntry | undefined {
    const skip = this.remaining + this.padding;
    if (this.done || this.src.buffered < skip + BLOCK) return undefined;
    const block = this.src.peek(skip, BLOCK);
    const t = block[156];
    if (t === 0x78 || t === 0x67 || t === 0x4c || t === 0x4b || t === 0x53 || isZeroBlock(block)) return undefined; // x g L K S
    const e = finishEntry(parseHeader(block), NO_OVERRIDES);
    this.src.readSync(skip + BLOCK);
    this.remaining = e.size;
    this.padding = padded(e.size) - e.size;
    this.sparse = null;
    return e;
  }

  async next(): Promise<TarEntry | null> {
    if (this.done) return null;
    await this.src.skip(this.remaining + this.padding);
    this.remaining = this.padding = 0;
    this.sparse = null;
    const ext = new Extensions();
    for (;;) {
      const block = await this.src.read(BLOCK);
      if (!block) throw new TarFormatError('truncated archive (no end-of-archive marker)');
      if (isZeroBlock(block)) {
        // End of archive: two zero blocks (or one at the very end). A zero block followed by a
        // header is a corrupt archive, not an end: the entries after it would be lost unseen.
        const second = await this.src.read(BLOCK);
        if (second && !isZeroBlock(second)) throw new TarFormatError('a zero block inside the archive (corrupt archive?)');
        this.done = true;
        await this.src.drain(); // trailing padding
        return null;
      }
      const h = parseHeader(block);
      if (isExtension(h.typeflag)) {
        checkExtensionSize(h.size);
        const body = await this.src.readExact(h.size);
        await this.src.skip(padded(h.size) - h.size);
        ext.add(h, body);
        continue;
      }
      const o = ext.take();
      const e = finishEntry(h, o);
      this.remaining = e.size;
      this.padding = padded(e.size) - e.size;
      if (h.typeflag === 'S' || o.sparse || o.sparseMap0) await this.startSparse(e, h, block, o);
      return e;
    }
  }

  /**
   * Read the sparse map of entry `e` (header `h`, its block `block`), set e.size to the file's
   * size and keep the runs for the body; nothing for PAX records that make no sparse file.
   */
  private async startSparse(e: TarEntry, h: RawHeader, block: Buffer, o: Overrides): Promise<void> {
    let runs: Runs;
    let size: number;
    if (h.typeflag === 'S') {
      // the map is in the header; extension blocks, when it says so, follow it before the data
      if (!isGnuHeader(block)) throw new TarFormatError("a sparse ('S') entry without a GNU header");
      size = parseNumeric(block, 483, 12, 'sparse real size');
      runs = newRuns();
      oldGnuRuns(block, 386, 4, runs, parseNumeric);
      for (let more = block[482] !== 0; more; ) {
        const b = await this.src.readExact(BLOCK);
        oldGnuRuns(b, 0, 21, runs, parseNumeric);
        more = b[504] !== 0;
      }
    } else {
      const p = paxSparse(o.sparse ?? new Map(), o.sparseMap0 ?? []);
      if (p === null) return;
      if (HEADER_ONLY.has(e.type)) throw new TarFormatError('a sparse map on an entry that is not a regular file');
      if (p.name !== undefined) e.path = p.name;
      size = p.size ?? e.size;
      runs = p.runs ?? (await this.readSparseMap1());
    }
    checkRuns(runs, size, this.remaining);
    e.size = size;
    this.sparse = { runs, size };
  }

  /** Sparse format 1.0: the map opens the body, in whole blocks (sparse-map.ts mapBlock). */
  private async readSparseMap1(): Promise<Runs> {
    const parser = newMap1Parser();
    for (;;) {
      if (this.remaining < BLOCK) throw new TarFormatError("the sparse map runs past the entry's data (sparse format 1.0)");
      const block = await this.src.readExact(BLOCK);
      this.remaining -= BLOCK;
      if (mapBlock(parser, block)) return parser.runs;
    }
  }

  /** The current entry's whole body (a view into the input when it lies in one chunk). */
  async readBody(): Promise<Buffer> {
    if (this.sparse) return this.readSparseBody();
    const n = this.remaining;
    this.remaining = 0;
    return this.src.readExact(n);
  }

  /** The current entry's whole body if it is buffered already (see readBody), else undefined. */
  readBodySync(): Buffer | undefined {
    if (this.sparse) return undefined;
    const b = this.src.readSync(this.remaining);
    if (b !== undefined) this.remaining = 0;
    return b;
  }

  /** A sparse file's body, expanded: holes are zeros. */
  private async readSparseBody(): Promise<Buffer> {
    const { runs, size } = this.sparse!;
    this.sparse = null;
    const out = Buffer.alloc(size);
    for (let i = 0; i < runs.count; i++) {
      const length = runs.pairs[2 * i + 1];
      if (length > 0) (await this.src.readExact(length)).copy(out, runs.pairs[2 * i]);
    }
    this.remaining = 0;
    return out;
  }

  /**
   * The current entry's body as a stream of pieces, for bodies too big to hold in memory: chunks
   * of bytes, and for a sparse file its holes as numbers (that many zeros), never expanded here.
   */
  async *bodyChunks(): AsyncGenerator<BodyPiece> {
    const sparse = this.sparse;
    const n = this.remaining;
    this.sparse = null;
    this.remaining = 0;
    if (!sparse) yield* this.src.chunks(n);
    else yield* this.sparsePieces(sparse.runs, sparse.size);
  }

  /**
   * A sparse file's pieces. Runs of data and holes under HOLE_PIECE_MIN are gathered into
   * buffers of up to GATHER bytes (zeros written out), so that a map of millions of tiny runs
   * does not become millions of pieces; bigger holes are numbers.
   */
  private async *sparsePieces(runs: Runs, size: number): AsyncGenerator<BodyPiece> {
    let gather = Buffer.allocUnsafe(GATHER);
    let used = 0;
    const flush = (): Buffer => {
      const out = gather.subarray(0, used);
      gather = Buffer.allocUnsafe(GATHER); // the consumer may still hold the last one
      used = 0;
      return out;
    };
    const zeros = function* (n: number): Generator<BodyPiece> {
      if (n >= HOLE_PIECE_MIN) {
        if (used > 0) yield flush();
        yield n;
        return;
      }
      while (n > 0) {
        const take = Math.min(n, GATHER - used);
        gather.fill(0, used, used + take);
        used += take;
        n -= take;
        if (used === GATHER) yield flush();
      }
    };
    let at = 0;
    for (let i = 0; i < runs.count; i++) {
      const offset = runs.pairs[2 * i];
      const length = runs.pairs[2 * i + 1];
      yield* zeros(offset - at);
      for await (const chunk of this.src.chunks(length)) {
        if (used === 0 && chunk.length >= HOLE_PIECE_MIN) {
          yield chunk; // big enough on its own: not copied
          continue;
        }
        for (let c = 0; c < chunk.length; ) {
          const take = Math.min(chunk.length - c, GATHER - used);
          chunk.copy(gather, used, c, c + take);
          used += take;
          c += take;
          if (used === GATHER) yield flush();
        }
      }
      at = offset + length;
    }
    yield* zeros(size - at);
    if (used > 0) yield flush();
  }
}

/** A member of a tar file read by seeking (see walkTarHeaders). */
export interface IndexedMember {
  name: string;
  type: EntryType;
  linkname: string;
  /** Offset of the body in the file. */
  offset: number;
  size: number;
}

/**
 * The members of a tar file, read by seeking: one pass over the headers (PAX/GNU extensions
 * applied), bodies skipped, for indexing image archives without reading their layers.
 * `readAt(offset, size)` returns exactly those bytes of the file.
 */
export function* walkTarHeaders(
  readAt: (offset: number, size: number) => Buffer,
  fileSize: number,
): Generator<IndexedMember> {
  let pos = 0;
  const ext = new Extensions();
  while (pos + BLOCK <= fileSize) {
    const block = readAt(pos, BLOCK);
    if (isZeroBlock(block)) {
      if (pos + 2 * BLOCK <= fileSize && !isZeroBlock(readAt(pos + BLOCK, BLOCK))) throw new TarFormatError('a zero block inside the archive (corrupt archive?)');
      return;
    }
    const h = parseHeader(block);
    const bodyAt = pos + BLOCK;
    if (isExtension(h.typeflag)) {
      checkExtensionSize(h.size);
      if (bodyAt + h.size > fileSize) throw new TarFormatError('truncated archive');
      pos = bodyAt + padded(h.size);
      ext.add(h, readAt(bodyAt, h.size));
      continue;
    }
    const o = ext.take();
    if (h.typeflag === 'S' || paxSparse(o.sparse ?? new Map(), o.sparseMap0 ?? []) !== null) throw new TarFormatError('a sparse file in the image archive (not a layer)');
    const e = finishEntry(h, o);
    // The body size may come from PAX (members over 8 GiB), not from the header.
    if (bodyAt + e.size > fileSize) throw new TarFormatError('truncated archive');
    pos = bodyAt + padded(e.size);
    yield { name: e.path, type: e.type, linkname: e.linkpath, offset: bodyAt, size: e.size };
  }
  throw new TarFormatError('truncated archive (no end-of-archive marker)');
}
