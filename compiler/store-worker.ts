// Worker thread of StoreWriter (store.ts): writes batches of small objects with plain
// synchronous syscalls, on the other core, while the main thread parses and hashes. A million
// objects through fs.promises cost more in promises, FileHandles and GC than in the kernel.
//
// For each object: skip it if any store already has it; else write it to a temp file in the
// store with the most free space and rename it to its name (never a partial file under an
// object name). A failed object's temp file is removed before the error is reported.
import fs from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';

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
  /** n digests of 32 bytes. */
  digests: Uint8Array;
  /** n+1 offsets into data. */
  offsets: number[];
  data: Uint8Array;
}

export interface DoneMessage {
  type: 'done';
  objectsNew: number;
  objectsPresent: number;
  bytesNew: number;
  error?: string;
}

const init = workerData as WorkerInit;
const objectsDirs = init.stores.map((s) => path.join(s, 'objects'));
const madeDirs = new Set<string>();
let counter = 0;
let free = objectsDirs.map(freeSpace);
let writtenSinceStatfs = 0;

function freeSpace(dir: string): number {
  const st = fs.statfsSync(dir);
  return st.bavail * st.bsize;
}

function exists(p: string): boolean {
  const st = fs.lstatSync(p, { throwIfNoEntry: false });
  return st !== undefined && st.isFile();
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

function writeObject(objectsDir: string, hex: string, content: Uint8Array): void {
  const fanout = objectsDir + '/' + hex.slice(0, 2);
  if (!madeDirs.has(fanout)) {
    fs.mkdirSync(fanout, { recursive: true });
    madeDirs.add(fanout);
  }
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
    fs.renameSync(tmp, fanout + '/' + hex.slice(2));
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function handleBatch(m: BatchMessage): DoneMessage {
  const reply: DoneMessage = { type: 'done', objectsNew: 0, objectsPresent: 0, bytesNew: 0 };
  const digests = Buffer.from(m.digests.buffer, m.digests.byteOffset, m.digests.byteLength);
  const n = m.offsets.length - 1;
  try {
    for (let i = 0; i < n; i++) {
      const hex = digests.toString('hex', i * 32, i * 32 + 32);
      const name = hex.slice(0, 2) + '/' + hex.slice(2);
      if (objectsDirs.some((d) => exists(d + '/' + name))) {
        reply.objectsPresent++;
        continue;
      }
      const content = m.data.subarray(m.offsets[i], m.offsets[i + 1]);
      writeObject(objectsDirs[chooseStore(content.length)], hex, content);
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
  parentPort!.postMessage(handleBatch(m));
});
