// Turning a stored layer blob into an uncompressed tar stream: compression detected by magic
// bytes (uncompressed, gzip, zstd), digests computed on the fly so a layer is read only once.
import { createHash, type Hash } from 'node:crypto';
import { pipeline } from 'node:stream';
import { Worker } from 'node:worker_threads';
import zlib from 'node:zlib';

import { DECOMPRESS_STATUS, nativeDecompressor, type NativeDecompressor } from '../mounter/addon.js';
import type { ReaderHash, ReaderMessage, ReaderRequest } from './layer-reader.js';

export type Compression = 'none' | 'gzip' | 'zstd';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

export function detectCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]) return 'gzip';
  if (head.length >= 4 && ZSTD_MAGIC.every((b, i) => head[i] === b)) return 'zstd';
  // A zstd skippable frame (0x184D2A50-5F, little-endian) first: zstd too, as containerd says.
  if (head.length >= 4 && (head[0] & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18) return 'zstd';
  return 'none';
}

/** What a layer digest covers: the stored bytes (OCI descriptors) or the tar (docker diff_ids). */
export type DigestScope = 'stored' | 'uncompressed';

export interface LayerDigestCheck {
  /** "sha256:<hex>" (or sha384/sha512). */
  digest: string;
  scope: DigestScope;
  /** Expected stored size, when the descriptor gives one. */
  size?: number;
}

/** Counters and hashes of one layer being read; verify() once the stream has been consumed. */
export class LayerReading {
  storedBytes = 0;
  tarBytes = 0;
  compression: Compression = 'none';
  /** Where the stored bytes come from, for messages ("file", "content API"...). */
  source = '';
  readonly algorithm: string;
  private hash: Hash;
  /** The stored bytes come from a LayerFileReader, which hashes them itself (see readerHash). */
  private offThread = false;
  private offThreadDigest: string | null = null;

  constructor(readonly check: LayerDigestCheck | null) {
    this.algorithm = check ? parseDigest(check.digest).algorithm : 'sha256';
    this.hash = createHash(this.algorithm);
  }

  /** What a LayerFileReader must hash for this check: every stored byte, or those of an uncompressed layer. */
  readerHash(): ReaderHash {
    if (!this.check) return 'none';
    return this.check.scope === 'stored' ? 'stored' : 'if-uncompressed';
  }

  /** The stored bytes are read and hashed (as readerHash() says) on a LayerFileReader's thread. */
  hashedOffThread(): void {
    this.offThread = true;
  }

  /** The digest (hex) the LayerFileReader computed, or null when it hashed nothing. */
  offThreadResult(hex: string | null): void {
    this.offThreadDigest = hex;
  }

  stored(chunk: Buffer): void {
    this.storedBytes += chunk.length;
    if (this.check?.scope === 'stored' && !this.offThread) this.hash.update(chunk);
  }

  tar(chunk: Buffer): void {
    this.tarBytes += chunk.length;
    // An uncompressed layer's tar bytes are its stored bytes: the reader thread hashed them.
    if (this.check?.scope === 'uncompressed' && !(this.offThread && this.compression === 'none')) this.hash.update(chunk);
  }

  /** Throws unless the bytes read match the expected digest (and size). */
  verify(): void {
    if (!this.check) return;
    const got = `${this.algorithm}:${this.offThreadDigest ?? this.hash.digest('hex')}`;
    if (got !== this.check.digest) {
      const what = this.check.scope === 'stored' ? 'layer digest mismatch' : 'layer diff_id mismatch (uncompressed sha256)';
      throw new Error(`${what}: expected ${this.check.digest}, got ${got}`);
    }
    if (this.check.size !== undefined && this.check.size !== this.storedBytes) {
      throw new Error(`layer size mismatch: descriptor says ${this.check.size} bytes, read ${this.storedBytes}`);
    }
  }
}

const DIGEST_RE = /^(sha256|sha384|sha512):([0-9a-f]+)$/;
const HEX_LENGTH: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/** Split and validate "alg:hex" (only algorithms the OCI spec registers). */
export function parseDigest(d: string): { algorithm: string; hex: string } {
  const m = DIGEST_RE.exec(d);
  if (!m || m[2].length !== HEX_LENGTH[m[1]]) throw new Error(`invalid digest ${JSON.stringify(d)}`);
  return { algorithm: m[1], hex: m[2] };
}

/** "sha256:0123456789abcdef..." -> "0123456789ab" (docker's short id), for messages. */
export function shortDigest(d: string): string {
  const m = DIGEST_RE.exec(d);
  return m ? m[2].slice(0, 12) : d;
}

/** Pass chunks through, showing each to `see`. */
async function* tap(src: AsyncIterable<Buffer>, see: (c: Buffer) => void): AsyncGenerator<Buffer> {
  for await (const c of src) {
    see(c);
    yield c;
  }
}

/** Re-yield a stream whose first chunks were already pulled; closing this closes it. */
async function* prepend(head: Buffer[], it: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  try {
    yield* head;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  } finally {
    await it.return?.();
  }
}

/** gunzip output chunk: fewer threadpool round trips than zlib's 16 KiB default. */
const GUNZIP_CHUNK = 256 << 10;
/**
 * Decompressed bytes zlib may hold ready for us. zlib inflates on libuv's threadpool, but with
 * the default 16 KiB it stops after each chunk until we have parsed and hashed it, so the two
 * took turns; with room for a few MiB it inflates ahead, on the other core.
 */
const GUNZIP_READ_AHEAD = 4 << 20;

async function decompressor(kind: Compression): Promise<NodeJS.ReadWriteStream> {
  // readableHighWaterMark is a Transform option that @types/node's ZlibOptions does not list.
  if (kind === 'gzip') return zlib.createGunzip({ chunkSize: GUNZIP_CHUNK, readableHighWaterMark: GUNZIP_READ_AHEAD } as zlib.ZlibOptions);
  // Loaded on first use: the native module costs tens of ms at start-up, and most layers are gzip.
  const { DecompressStream } = await import('zstd-napi');
  return new DecompressStream();
}

/** Output chunk of the addon's decompressors: one threadpool step fills one. */
const NATIVE_CHUNK = 1 << 20;

/** What a stream that stops inside a member or frame says: the words of node's zlib and zstd-napi. */
const TRUNCATED = { gzip: 'unexpected end of file', zstd: 'Stream ended in middle of compressed data frame' } as const;

/**
 * Decompresses with the addon (nativeDecompressor: ISA-L for gzip, libzstd for zstd). While the
 * consumer works on one chunk, the next is being decompressed on the threadpool. Chunks are
 * fresh buffers, never reused: the tar parser keeps views of them. Errors in the words of the
 * JavaScript decompressors ("unexpected end of file", "incorrect data check"...).
 */
async function* decompressWith(native: NativeDecompressor, truncated: string, source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  const state = native.open();
  let input: Buffer = Buffer.alloc(0);
  let out = Buffer.allocUnsafe(NATIVE_CHUNK);
  let filled = 0;
  let step = native.step(state, input, out);
  try {
    for (;;) {
      const [read, written, status] = await step;
      input = input.subarray(read);
      filled += written;
      if (status === DECOMPRESS_STATUS.OUTPUT_FULL) {
        const full = out;
        out = Buffer.allocUnsafe(NATIVE_CHUNK);
        filled = 0;
        step = native.step(state, input, out);
        yield full;
        continue;
      }
      if (status === DECOMPRESS_STATUS.END) {
        if (filled) yield out.subarray(0, filled);
        // The padding and what follows are ignored, but read: the layer digest covers them.
        for (let r = await it.next(); !r.done; r = await it.next());
        return;
      }
      const r = await it.next();
      if (r.done) {
        if (status === DECOMPRESS_STATUS.NEED_MORE) throw new Error(truncated);
        if (filled) yield out.subarray(0, filled);
        return;
      }
      input = r.value;
      step = native.step(state, input, out.subarray(filled));
    }
  } finally {
    // A consumer that stops early (or an error) must not leave a step running on our buffers;
    // then the source is closed (its file, its reader thread's read).
    await step.catch(() => {});
    await it.return?.();
  }
}

/**
 * The uncompressed tar of a stored layer, decompressing by magic bytes. `reading` sees the
 * stored and the tar bytes (hashes, progress). Consume it to the end, then reading.verify().
 */
export async function* layerTar(stored: AsyncIterable<Buffer>, reading: LayerReading): AsyncGenerator<Buffer> {
  const it = tap(stored, (c) => reading.stored(c))[Symbol.asyncIterator]();
  const head: Buffer[] = [];
  let headBytes = 0;
  while (headBytes < ZSTD_MAGIC.length) {
    const r = await it.next();
    if (r.done) break;
    head.push(r.value);
    headBytes += r.value.length;
  }
  reading.compression = detectCompression(Buffer.concat(head));
  const source = prepend(head, it);
  if (reading.compression === 'none') {
    for await (const c of source) {
      reading.tar(c);
      yield c;
    }
    return;
  }
  const native = nativeDecompressor(reading.compression);
  if (native) {
    for await (const c of decompressWith(native, TRUNCATED[reading.compression], source)) {
      reading.tar(c);
      yield c;
    }
    return;
  }
  const dec = await decompressor(reading.compression);
  // pipeline() forwards errors both ways: a read error fails the decompressor, and if the
  // consumer stops early, destroying `dec` ends the source (closing the file).
  pipeline(source, dec, () => {});
  for await (const c of dec as AsyncIterable<Buffer>) {
    reading.tar(c);
    yield c;
  }
}

/** Where a layer's stored bytes are: a byte range of a file (end exclusive; none: to its end). */
export interface FileRange {
  path: string;
  start: number;
  end?: number;
}

/** 1 MiB chunks the reader thread may read ahead of the tar parser. */
const READ_AHEAD_CHUNKS = 8;

/**
 * Reads layers' stored bytes on a worker thread (layer-reader.ts), which also computes the
 * layer digest, so the main thread only decompresses and parses. One layer at a time; close()
 * when done.
 */
export class LayerFileReader {
  private readonly worker = new Worker(new URL('./layer-reader.js', import.meta.url));
  private nextId = 0;
  private listener: ((m: ReaderMessage) => void) | null = null;
  private failure: Error | null = null;

  constructor() {
    this.worker.on('message', (m: ReaderMessage) => this.listener?.(m));
    const died = (err: Error) => {
      this.failure ??= err;
      this.listener?.({ type: 'error', id: this.nextId, message: err.message });
    };
    this.worker.on('error', (err) => died(new Error(`layer reader failed: ${err.message}`)));
    this.worker.on('exit', () => died(new Error('layer reader exited unexpectedly')));
  }

  /** The stored bytes of `range`; when they end, `reading` gets the digest computed off thread. */
  async *read(range: FileRange, reading: LayerReading): AsyncGenerator<Buffer> {
    if (this.failure) throw this.failure;
    const id = ++this.nextId;
    const queue: ReaderMessage[] = [];
    let wake: (() => void) | null = null;
    this.listener = (m) => {
      if (m.id !== id) return;
      queue.push(m);
      wake?.();
    };
    let consumed = 0;
    reading.hashedOffThread();
    this.post({ type: 'read', id, ...range, algorithm: reading.algorithm, hash: reading.readerHash(), credit: READ_AHEAD_CHUNKS });
    try {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
        const m = queue.shift()!;
        if (m.type === 'error') throw new Error(m.message);
        if (m.type === 'end') {
          reading.offThreadResult(m.digest);
          return;
        }
        yield Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
        // Credit goes back half a window at a time: each message wakes the reader thread up.
        if (++consumed === READ_AHEAD_CHUNKS / 2) {
          this.post({ type: 'more', id, n: consumed });
          consumed = 0;
        }
      }
    } finally {
      this.listener = null;
    }
  }

  async close(): Promise<void> {
    this.failure ??= new Error('layer reader closed');
    this.post({ type: 'stop' });
    await this.worker.terminate();
  }

  private post(m: ReaderRequest): void {
    this.worker.postMessage(m);
  }
}
