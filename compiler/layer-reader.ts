// Worker thread of LayerFileReader (layerio.ts): reads a layer's stored bytes from its file and
// computes the layer digest, on the other core, handing each chunk to the main thread (its
// ArrayBuffer is transferred, not copied). The digest covers exactly the bytes handed over, so
// the check cannot be fooled by a file that changes between two reads. A 3 GiB uncompressed
// layer otherwise costs the main thread a second of SHA-256 and the read() calls.
//
// The main thread grants credit (chunks it may have pending); we read only that far ahead.
import fs from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { detectCompression } from './layerio.js';

/** Which stored bytes to hash: all, only an uncompressed layer (docker diff_ids), or none. */
export type ReaderHash = 'stored' | 'if-uncompressed' | 'none';

export interface ReadRequest {
  type: 'read';
  /** Distinguishes this read's messages from those of an abandoned one. */
  id: number;
  path: string;
  start: number;
  /** Exclusive; undefined: to the end of the file. */
  end?: number;
  algorithm: string;
  hash: ReaderHash;
  /** Chunks the main thread accepts before it asks for more. */
  credit: number;
}

export type ReaderRequest = ReadRequest | { type: 'more'; id: number; n: number } | { type: 'stop' };

export type ReaderMessage =
  | { type: 'chunk'; id: number; data: Uint8Array }
  /** digest: hex of the bytes read, or null when they were not hashed. */
  | { type: 'end'; id: number; digest: string | null }
  | { type: 'error'; id: number; message: string };

const CHUNK = 1 << 20;

interface Reading {
  req: ReadRequest;
  fd: number;
  pos: number;
  credit: number;
  /** undefined until the first chunk tells whether the layer is compressed. */
  hash: Hash | null | undefined;
}

let current: Reading | null = null;

function post(m: ReaderMessage, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(m, transfer);
}

function stop(): void {
  const r = current;
  current = null;
  if (r) fs.closeSync(r.fd);
}

function hasherFor(req: ReadRequest, first: Uint8Array): Hash | null {
  if (req.hash === 'none') return null;
  if (req.hash === 'if-uncompressed' && detectCompression(first) !== 'none') return null;
  return createHash(req.algorithm);
}

/** Read and hand over chunks while the main thread has credit left. */
function pump(): void {
  const r = current;
  if (!r) return;
  while (r.credit > 0) {
    const want = r.req.end === undefined ? CHUNK : Math.min(CHUNK, r.req.end - r.pos);
    const buf = Buffer.allocUnsafeSlow(Math.max(want, 1)); // own ArrayBuffer: it is transferred
    const n = want === 0 ? 0 : fs.readSync(r.fd, buf, 0, want, r.pos);
    if (n === 0) {
      if (r.req.end !== undefined && r.pos < r.req.end) throw new Error(`${r.req.path}: file ends before the layer does`);
      const digest = r.hash ? r.hash.digest('hex') : null;
      stop();
      post({ type: 'end', id: r.req.id, digest });
      return;
    }
    const data = buf.subarray(0, n);
    if (r.hash === undefined) r.hash = hasherFor(r.req, data);
    r.hash?.update(data);
    r.pos += n;
    r.credit--;
    post({ type: 'chunk', id: r.req.id, data }, [buf.buffer as ArrayBuffer]);
  }
}

function handle(m: ReaderRequest): void {
  if (m.type === 'stop') {
    stop();
    parentPort!.close();
    return;
  }
  const id = m.id;
  try {
    if (m.type === 'read') {
      stop();
      current = { req: m, fd: fs.openSync(m.path, 'r'), pos: m.start, credit: m.credit, hash: undefined };
    } else if (current?.req.id === id) {
      current.credit += m.n;
    }
    if (current?.req.id === id) pump();
  } catch (err) {
    if (current?.req.id === id) stop();
    post({ type: 'error', id, message: (err as Error).message ?? String(err) });
  }
}

parentPort!.on('message', handle);
