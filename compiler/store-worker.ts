// Worker thread of StoreWriter (store.ts): hashes and writes batches of in-memory objects with
// plain synchronous calls, on the other core, while the main thread decompresses, parses and
// builds the tree. A million objects through fs.promises cost more in promises, FileHandles and
// GC than in the kernel.
//
// For each content: compute its fs-verity digest (sent back, in order); skip it if this writer
// saw it before or any store already has it; else write it to a temp file in the store with the
// most free space and rename it to its name (never a partial file under an object name). A
// failed object's temp file is removed before the error is reported.
import fs from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { hashBufferScratch } from './store.js';

export interface WorkerInit {
  stores: string[];
  /** Prefix of temp file names, unique to this writer: ".../objects/.tmp-<pid>-<random>-". */
  tempTag: string;
  fileMode: number;
  /** chmod after create (the umask would strip bits of fileMode). */
  chmod: boolean;
}

export interface BatchMessage {
  type: 'batch';
  /** n+1 offsets into data: content i is data[offsets[i], offsets[i+1]). */
  offsets: number[];
  /** Its ArrayBuffer is transferred here and back (in DoneMessage.data) for reuse. */
  data: Uint8Array;
}

export interface DoneMessage {
  type: 'done';
  /** n digests of 32 bytes, in the batch's order (fewer after an error). */
  digests: Uint8Array;
  /** The batch's data, handed back. */
  data: Uint8Array;
  objectsNew: number;
  objectsPresent: number;
  bytesNew: number;
  error?: string;
}

const init = workerData as WorkerInit;
const objectsDirs = init.stores.map((s) => path.join(s, 'objects'));
/** Digests (binary strings) handled already: present, or written by us. */
const known = new Set<string>();
/**
 * Per store, what we know of each fan-out directory ("ab"): 'shared' if it existed when first
 * looked at (its objects are looked up one by one), 'missing' if it did not, 'ours' once we
 * created it. In a missing or own directory no object needs an lstat, so an empty store costs
 * no "already there?" call per object. (A concurrent writer's identical object may then be
 * replaced by ours, by rename: harmless.)
 */
type Fanout = 'shared' | 'missing' | 'ours';
const fanouts = objectsDirs.map(() => new Map<string, Fanout>());
let counter = 0;
let free = objectsDirs.map(freeSpace);
let writtenSinceStatfs = 0;

function freeSpace(dir: string): number {
  const st = fs.statfsSync(dir);
  return st.bavail * st.bsize;
}

function fanoutState(d: number, fan: string): Fanout {
  let state = fanouts[d].get(fan);
  if (state === undefined) {
    state = fs.lstatSync(`${objectsDirs[d]}/${fan}`, { throwIfNoEntry: false }) === undefined ? 'missing' : 'shared';
    fanouts[d].set(fan, state);
  }
  return state;
}

function inStore(d: number, hex: string): boolean {
  if (fanoutState(d, hex.slice(0, 2)) !== 'shared') return false;
  const st = fs.lstatSync(`${objectsDirs[d]}/${hex.slice(0, 2)}/${hex.slice(2)}`, { throwIfNoEntry: false });
  return st !== undefined && st.isFile();
}

function makeFanout(d: number, fan: string): void {
  try {
    fs.mkdirSync(`${objectsDirs[d]}/${fan}`);
    fanouts[d].set(fan, 'ours');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    fanouts[d].set(fan, 'shared'); // another writer made it meanwhile
  }
}

/** Index of the store with most free space (statfs refreshed every 256 MiB written). */
function chooseStore(size: number): number {
  if (objectsDirs.length === 1) return 0;
  if (writtenSinceStatfs > 256 << 20) {
    free = objectsDirs.map(freeSpace);
    writtenSinceStatfs = 0;
  }
  let best = 0;
  for (let i = 1; i < free.length; i++) if (free[i] > free[best]) best = i;
  free[best] -= size;
  writtenSinceStatfs += size;
  return best;
}

function writeObject(d: number, hex: string, content: Uint8Array): void {
  const fan = hex.slice(0, 2);
  if (fanoutState(d, fan) === 'missing') makeFanout(d, fan);
  const objectsDir = objectsDirs[d];
  const tmp = `${objectsDir}/${init.tempTag}${(counter++).toString(36)}`;
  try {
    const fd = fs.openSync(tmp, 'wx', init.fileMode);
    try {
      let done = 0;
      while (done < content.length) done += fs.writeSync(fd, content, done, content.length - done);
      if (init.chmod) fs.fchmodSync(fd, init.fileMode);
    } finally {
      fs.closeSync(fd);
    }
    // rename() atomically replaces a concurrent writer's identical object, which is harmless.
    fs.renameSync(tmp, `${objectsDir}/${fan}/${hex.slice(2)}`);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function handleBatch(m: BatchMessage): DoneMessage {
  const n = m.offsets.length - 1;
  const digests = Buffer.allocUnsafeSlow(n * 32); // own ArrayBuffer: it is transferred
  const reply: DoneMessage = { type: 'done', digests, data: m.data, objectsNew: 0, objectsPresent: 0, bytesNew: 0 };
  try {
    for (let i = 0; i < n; i++) {
      const content = m.data.subarray(m.offsets[i], m.offsets[i + 1]);
      hashBufferScratch(content).copy(digests, i * 32);
      const key = digests.toString('latin1', i * 32, i * 32 + 32);
      if (known.has(key)) continue;
      known.add(key);
      const hex = digests.toString('hex', i * 32, i * 32 + 32);
      if (objectsDirs.some((_, d) => inStore(d, hex))) {
        reply.objectsPresent++;
        continue;
      }
      writeObject(chooseStore(content.length), hex, content);
      reply.objectsNew++;
      reply.bytesNew += content.length;
    }
  } catch (err) {
    reply.error = (err as Error).message ?? String(err);
  }
  return reply;
}

parentPort!.on('message', (m: BatchMessage | { type: 'close' }) => {
  if (m.type === 'close') {
    parentPort!.close();
    return;
  }
  const reply = handleBatch(m);
  const data = reply.data;
  parentPort!.postMessage(reply, [reply.digests.buffer as ArrayBuffer, ...(data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? [data.buffer as ArrayBuffer] : [])]);
});
