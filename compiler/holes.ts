// Objects with holes (sparse files of a layer, compiler/tar.ts; the store keeps their holes):
// hashing and copying them skips the holes instead of reading and writing their zeros, which a
// hostile layer can make terabytes of. Where the addon (lseek SEEK_DATA) is missing, callers
// fall back to reading the whole file.
import fs from 'node:fs';
import { canSeekData, dataExtents } from '../mounter/addon.js';
import { newVerityHasher } from './store.js';
import type { BodyPiece } from './tar.js';

/** Whether a file of this stat has holes to skip: fewer bytes allocated than its size (and the addon can find them). */
export function skipsHoles(st: Pick<fs.Stats, 'blocks' | 'size'> | Pick<fs.BigIntStats, 'blocks' | 'size'>): boolean {
  return Number(st.blocks) * 512 < Number(st.size) && canSeekData();
}

const CHUNK = 1 << 20;

/** The runs of data of open file `fd`, clipped to `size` and read in chunks: [offset, bytes]. */
function* dataChunks(fd: number, size: number, buf: Buffer): Generator<[number, Buffer]> {
  for (const [start, end] of dataExtents(fd)) {
    for (let at = start; at < Math.min(end, size); ) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, Math.min(end, size) - at), at);
      if (n === 0) return; // the file shrank under us: the digest or copy will not match
      yield [at, buf.subarray(0, n)];
      at += n;
    }
  }
}

/** fs-verity digest of open file `fd` of `size` bytes, its holes hashed as runs of zeros. */
export function hashFileSkippingHoles(fd: number, size: number): Buffer {
  const h = newVerityHasher();
  let done = 0;
  for (const [at, bytes] of dataChunks(fd, size, Buffer.allocUnsafe(CHUNK))) {
    if (at > done) h.updateZeros(at - done);
    h.update(bytes);
    done = at + bytes.length;
  }
  if (size > done) h.updateZeros(size - done);
  return h.digest();
}

/** Copy `size` bytes of open file `from` into a new file `to` (created exclusively), leaving its holes holes. */
export function copySkippingHoles(from: number, size: number, to: fs.PathLike, mode: number): void {
  const out = fs.openSync(to, 'wx', mode);
  try {
    for (const [at, bytes] of dataChunks(from, size, Buffer.allocUnsafe(CHUNK))) {
      for (let w = 0; w < bytes.length; ) w += fs.writeSync(out, bytes, w, bytes.length - w, at + w);
    }
    fs.ftruncateSync(out, size);
  } finally {
    fs.closeSync(out);
  }
}

/** The content of open file `fd` of `size` bytes for StoreWriter.putStream: its data, and its holes as numbers. */
export async function* piecesSkippingHoles(fd: number, size: number): AsyncGenerator<BodyPiece> {
  let done = 0;
  // a fresh buffer per chunk: the consumer may still hold the last one when it asks for the next
  for (const [at, bytes] of dataChunks(fd, size, Buffer.allocUnsafe(CHUNK))) {
    if (at > done) yield at - done;
    yield Buffer.from(bytes);
    done = at + bytes.length;
  }
  if (size > done) yield size - done;
}
