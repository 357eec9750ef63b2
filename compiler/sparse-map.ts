// The maps of sparse files in tar layers (compiler/tar.ts reads the entries): GNU tar's old 'S'
// headers and PAX formats 0.0, 0.1 and 1.0, read as Go's archive/tar reads them (containerd,
// docker and umoci unpack with it): readOldGNUSparseMap, readGNUSparsePAXHeaders,
// readGNUSparseMap0x1, readGNUSparseMap1x0 and validateSparseEntries.
//
// A map is a list of data runs (offset, length) in the file; the archive holds their bytes one
// after the other, and everything between them is a hole. A hostile layer can declare millions
// of runs in a few megabytes, so runs are packed two numbers each in one Float64Array (16 bytes
// a run, as Go keeps them), and format 1.0's map, which has no size limit, is parsed in one pass
// over its blocks.

export class SparseMapError extends Error {}

/** Data runs: run i is `length(i)` bytes of data at offset `offset(i)` of the file. */
export interface Runs {
  /** offset, length, offset, length, ... (only the first 2 * count are used). */
  pairs: Float64Array;
  count: number;
}

export function newRuns(): Runs {
  return { pairs: new Float64Array(16), count: 0 };
}

export function pushRun(r: Runs, offset: number, length: number): void {
  if (2 * r.count + 2 > r.pairs.length) {
    const bigger = new Float64Array(r.pairs.length * 2);
    bigger.set(r.pairs);
    r.pairs = bigger;
  }
  r.pairs[2 * r.count] = offset;
  r.pairs[2 * r.count + 1] = length;
  r.count++;
}

/** A map number: decimal, as Go's ParseInt takes it (an optional sign; a negative one fails checkRuns). */
function mapNumber(s: string, what: string): number {
  if (!/^[+-]?[0-9]+$/.test(s)) throw new SparseMapError(`invalid number in the sparse map (${what})`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new SparseMapError(`number out of range in the sparse map (${what})`);
  return n;
}

/**
 * Go's validateSparseEntries: a file size not negative, every run inside the file, in order,
 * not overlapping; and the runs' lengths must add up to the data the entry holds (Go finds out
 * while reading: errMissData, errUnrefData). Returns nothing; throws SparseMapError.
 */
export function checkRuns(r: Runs, size: number, data: number): void {
  if (size < 0) throw new SparseMapError(`negative sparse file size ${size}`);
  let end = 0;
  let total = 0;
  for (let i = 0; i < r.count; i++) {
    const offset = r.pairs[2 * i];
    const length = r.pairs[2 * i + 1];
    if (offset < 0 || length < 0 || offset + length > size || offset < end) {
      throw new SparseMapError('invalid sparse map (a data run outside the file, overlapping or out of order)');
    }
    end = offset + length;
    total += length;
  }
  if (total !== data) throw new SparseMapError(`the sparse map names ${total} bytes of data, the entry holds ${data}`);
}

/**
 * Old GNU sparse entries ('S'): `count` map entries of 24 bytes (offset, length: 12-byte numeric
 * fields) at `at` in a header or extension block, read with `parseNumber`. GNU and BSD tar stop
 * at the first entry whose offset field starts with a NUL.
 */
export function oldGnuRuns(b: Buffer, at: number, count: number, out: Runs, parseNumber: (b: Buffer, start: number, len: number, field: string) => number): void {
  for (let i = 0; i < count; i++) {
    const e = at + i * 24;
    if (b[e] === 0) return;
    pushRun(out, parseNumber(b, e, 12, 'sparse offset'), parseNumber(b, e + 12, 12, 'sparse length'));
  }
}

/** A GNU.sparse.* record. 0.0 repeats offset and numbytes, alternating: they go to `map0`. */
export function addSparseRecord(records: Map<string, string>, map0: string[], key: string, value: string): void {
  if (key === 'offset' || key === 'numbytes') {
    if ((map0.length % 2 === 0) !== (key === 'offset') || value.includes(',')) {
      throw new SparseMapError('malformed GNU.sparse.offset/numbytes records (sparse format 0.0)');
    }
    map0.push(value);
    return;
  }
  records.set(key, value);
}

/** What a PAX header says of a sparse file: its map (null: format 1.0, in the body), size and name. */
export interface PaxSparse {
  runs: Runs | null;
  /** GNU.sparse.size or .realsize; undefined: the body's size. */
  size: number | undefined;
  name: string | undefined;
}

/**
 * The sparse file that GNU.sparse.* records (`records`, 0.0's offset/numbytes in `map0`) make,
 * or null when they make none: no records, or a version Go does not know (then the body is the
 * file as stored). Go joins 0.0's records into a 0.1 map, which replaces a GNU.sparse.map record.
 */
export function paxSparse(records: Map<string, string>, map0: string[]): PaxSparse | null {
  const get = (k: string) => records.get(k) || undefined; // an empty value is none (Go: != "")
  const major = get('major');
  const minor = get('minor');
  const joined = map0.length > 0 ? map0.join(',') : get('map');
  let v1: boolean;
  if (major === '0' && (minor === '0' || minor === '1')) v1 = false;
  else if (major === '1' && minor === '0') v1 = true;
  else if (major !== undefined || minor !== undefined) return null;
  else if (joined) v1 = false; // 0.0 and 0.1 had no version records
  else return null;
  const sizeText = get('size') ?? get('realsize');
  const size = sizeText === undefined ? undefined : mapNumber(sizeText, 'GNU.sparse.size');
  let runs: Runs | null = null;
  if (!v1) {
    const count = mapNumber(get('numblocks') ?? '', 'GNU.sparse.numblocks');
    const fields = joined ? joined.split(',') : [];
    if (count < 0 || fields.length !== 2 * count) throw new SparseMapError('GNU.sparse.map does not have GNU.sparse.numblocks entries');
    runs = newRuns();
    for (let i = 0; i < fields.length; i += 2) pushRun(runs, mapNumber(fields[i], 'GNU.sparse.map'), mapNumber(fields[i + 1], 'GNU.sparse.map'));
  }
  return { runs, size, name: get('name') };
}

/**
 * Format 1.0's map, which opens the body in whole 512-byte blocks: decimal numbers, each ended
 * by a newline: the count of runs, then offset and length of each. Feed it block by block
 * (mapBlock) until it says it is complete; each byte is looked at once.
 */
export interface Map1Parser {
  runs: Runs;
  /** The number being read (digits so far; may span blocks). */
  token: string;
  /** Numbers still wanted; -1 until the count is read. */
  left: number;
  pendingOffset: number | null;
}

export function newMap1Parser(): Map1Parser {
  return { runs: newRuns(), token: '', left: -1, pendingOffset: null };
}

/** Takes the next block of the map; true once the map is complete (the rest of the block is padding). */
export function mapBlock(p: Map1Parser, block: Buffer): boolean {
  let start = 0;
  for (;;) {
    const nl = block.indexOf(0x0a, start);
    if (nl < 0) {
      p.token += block.toString('latin1', start);
      return false;
    }
    const n = mapNumber(p.token + block.toString('latin1', start, nl), 'sparse format 1.0');
    p.token = '';
    start = nl + 1;
    if (p.left < 0) {
      if (n < 0) throw new SparseMapError('negative count in the sparse map');
      p.left = 2 * n;
    } else if (p.pendingOffset === null) {
      p.pendingOffset = n;
      p.left--;
    } else {
      pushRun(p.runs, p.pendingOffset, n);
      p.pendingOffset = null;
      p.left--;
    }
    if (p.left === 0) return true;
  }
}
