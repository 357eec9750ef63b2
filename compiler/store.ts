// The content-addressed object store (composefs layout): STORE/objects/XX/<62 hex>, named by
// the fs-verity SHA-256 digest of the content (SPEC.md section 7).
//
// Consistency rule: a file only ever appears under an object name complete: linked in from an
// unnamed O_TMPFILE file (the addon's writeObjectFile), by rename() of a complete temp file
// where that is not possible, or (StoreWriter.adopt) by link() of a closed file another writer
// finished, whose content the caller vouches for, so a crash (even SIGKILL) never leaves an
// object whose content differs from its name. Temp files are `objects/.tmp-<pid>-<random>-<n>` (never in the fan-out directories); a
// build removes its own on error and later builds remove those of dead processes
// (cleanStaleTemps). Durability is not per object: the builder runs one syncfs per store
// (`sync -f`) before it publishes the blob that needs the objects.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import type { AdoptItem, AdoptMessage, AdoptedMessage, BatchMessage, ControlMessage, DeferredObject, DoneMessage, StreamPart, WorkerInit } from './store-worker.js';
export type { AdoptItem } from './store-worker.js';
import { VerityHasher, verityDigest, verityDigestOfFile } from '../format/verity.js';
import { addonBuilt, nativeBlockHasher, nativeVerityDigest } from '../mounter/addon.js';
import { makeDirs } from './mkdirs.js';
import type { BodyPiece } from './tar.js';

export const OBJECTS_DIR = 'objects';
export const TEMP_PREFIX = '.tmp-';

/** Contents up to this size are hashed in memory; bigger ones stream through a temp file. */
export const MEMORY_OBJECT_LIMIT = 8 << 20;

/** Digest as 64 lowercase hex digits (accepts a 32-byte Buffer or a hex string). */
export function digestHex(digest: Buffer | string): string {
  const hex = typeof digest === 'string' ? digest.toLowerCase() : digest.toString('hex');
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`invalid object digest ${JSON.stringify(String(hex))}`);
  return hex;
}

/** STORE/objects/XX/YYYY... for a digest. */
export function objectPath(store: string, digest: Buffer | string): string {
  const hex = digestHex(digest);
  return path.join(store, OBJECTS_DIR, hex.slice(0, 2), hex.slice(2));
}

/** The digest named by an object path relative to objects/ ("XX/YYYY..."), or null if it is not one. */
export function digestFromObjectName(rel: string): Buffer | null {
  const m = /^([0-9a-f]{2})\/([0-9a-f]{62})$/.exec(rel.split(path.sep).join('/'));
  return m ? Buffer.from(m[1] + m[2], 'hex') : null;
}

/** True if `store` holds the object as a regular file (symlinks are never followed). */
export function hasObject(store: string, digest: Buffer | string): boolean {
  const st = fs.lstatSync(objectPath(store, digest), { throwIfNoEntry: false });
  return st !== undefined && st.isFile();
}

/** Path of the object in the first store of the list that has it (reader semantics), else null. */
export function findObject(stores: string[], digest: Buffer | string): string | null {
  for (const s of stores) if (hasObject(s, digest)) return objectPath(s, digest);
  return null;
}

/** fs-verity digest of a file's content, streamed. */
export function hashFile(file: string): Promise<Buffer> {
  return verityDigestOfFile(file, nativeBlocks);
}

const sha256Once: (data: Uint8Array) => Buffer =
  typeof crypto.hash === 'function'
    ? (data) => crypto.hash('sha256', data, 'buffer')
    : (data) => crypto.createHash('sha256').update(data).digest();
const VERITY_BLOCK = 4096;
/** Hashes per Merkle block: contents of up to this many blocks have a one-level tree. */
const HASHES_PER_BLOCK = VERITY_BLOCK / 32;
const blockScratch = Buffer.alloc(VERITY_BLOCK);
const level0Scratch = Buffer.alloc(VERITY_BLOCK);
/** fsverity_descriptor (see format/verity.ts): version 1, SHA-256, 4096-byte blocks, no salt. */
const descriptorScratch = Buffer.alloc(256);
descriptorScratch.set([1, 1, 12, 0]);

/**
 * fs-verity digest of an in-memory content, without the general hasher's per-file buffers (a
 * million small files otherwise cost seconds of allocation and GC). Contents of one block (most
 * image files) have the hash of the zero-padded block as Merkle root; contents of 2..128 blocks
 * (up to 512 KiB) have one level of block hashes, packed into one zero-padded block whose hash
 * is the root. Bigger and empty contents go through verityDigest().
 * Must equal verityDigest(); the tests compare them at every boundary.
 */
export function hashBuffer(buf: Buffer): Buffer {
  return keepDigest(hashBufferScratch(buf));
}

const nativeDigest = nativeVerityDigest();
const nativeScratch = Buffer.alloc(32);
const nativeBlocks = nativeBlockHasher();

/** A streaming fs-verity hasher, its first level hashed by the addon where it is built. */
export function newVerityHasher(): VerityHasher {
  return new VerityHasher(nativeBlocks);
}

/**
 * hashBuffer() into a short-lived Buffer (the caller copies it before the next call): the
 * addon's where it is built (one native call per content instead of one node:crypto call per
 * 4 KiB block), else hashBufferJs().
 */
export function hashBufferScratch(buf: Uint8Array): Buffer {
  if (nativeDigest === null) return hashBufferJs(buf);
  nativeDigest(buf, nativeScratch);
  return nativeScratch;
}

/** hashBufferScratch() with node:crypto only. */
export function hashBufferJs(buf: Uint8Array): Buffer {
  const n = buf.length;
  if (n === 0 || n > HASHES_PER_BLOCK * VERITY_BLOCK) return verityDigest(Buffer.from(buf.buffer, buf.byteOffset, n));
  let root: Buffer;
  if (n <= VERITY_BLOCK) {
    blockScratch.set(buf);
    blockScratch.fill(0, n);
    root = sha256Once(blockScratch);
  } else {
    const whole = Math.floor(n / VERITY_BLOCK);
    const blocks = Math.ceil(n / VERITY_BLOCK);
    for (let b = 0; b < whole; b++) sha256Once(buf.subarray(b * VERITY_BLOCK, (b + 1) * VERITY_BLOCK)).copy(level0Scratch, b * 32);
    if (blocks > whole) {
      blockScratch.set(buf.subarray(whole * VERITY_BLOCK));
      blockScratch.fill(0, n - whole * VERITY_BLOCK);
      sha256Once(blockScratch).copy(level0Scratch, whole * 32);
    }
    level0Scratch.fill(0, blocks * 32);
    root = sha256Once(level0Scratch);
  }
  root.copy(descriptorScratch, 16);
  descriptorScratch.writeUInt32LE(n, 8); // le64 data_size; the high half stays 0 (n <= 512 KiB)
  return sha256Once(descriptorScratch);
}

const DIGEST_SLAB = 2048 * 32;
let digestSlab = Buffer.allocUnsafeSlow(DIGEST_SLAB);
let digestSlabUsed = 0;

/**
 * A copy of a 32-byte digest that lives as long as the tree: a view into a shared slab, not a
 * Buffer with its own ArrayBuffer (about 300 bytes of overhead each, per file of the image).
 */
export function keepDigest(d: Buffer): Buffer {
  const out = digestSlot(d.length);
  d.copy(out);
  return out;
}

/** `n` bytes of the current digest slab. */
function digestSlot(n: number): Buffer {
  if (digestSlabUsed + n > DIGEST_SLAB) {
    digestSlab = Buffer.allocUnsafeSlow(DIGEST_SLAB);
    digestSlabUsed = 0;
  }
  const out = digestSlab.subarray(digestSlabUsed, digestSlabUsed + n);
  digestSlabUsed += n;
  return out;
}

/** True for names of temp files the store writers create inside objects/. */
export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX);
}

/** True if a process with this pid exists (on this host, in this pid namespace). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err: any) {
    return err.code === 'EPERM';
  }
}

/** A temp file stays this long after its last write before another process may remove it. */
const STALE_TEMP_MS = 60_000;
/** ...and this long when its writer's pid seems alive (it may be a reused pid, or another host's). */
const ABANDONED_TEMP_MS = 24 * 3600_000;

/**
 * Remove temp files left in STORE/objects by killed builds: those whose writer pid is dead and
 * that have not been written for a minute (a live writer touches its temp file continuously,
 * and the age guard protects writers in another pid namespace), and any older than a day.
 * Returns the number removed. Never touches objects.
 */
export function cleanStaleTemps(store: string, now = Date.now()): number {
  const dir = path.join(store, OBJECTS_DIR);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (!isTempName(name)) continue;
    const p = path.join(dir, name);
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (!st || !st.isFile()) continue;
    const pid = Number(/^\.tmp-(\d+)-/.exec(name)?.[1] ?? NaN);
    const age = now - st.mtimeMs;
    const dead = !Number.isInteger(pid) || !pidAlive(pid);
    if ((dead && age > STALE_TEMP_MS) || age > ABANDONED_TEMP_MS) {
      fs.rmSync(p, { force: true });
      removed++;
    }
  }
  return removed;
}

/** Flush a whole filesystem to disk once (syncfs), instead of one fsync per object. */
export function syncFilesystem(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('sync', ['-f', dir], (err, _stdout, stderr) => {
      if (err) reject(new Error(`sync -f ${dir} failed: ${String(stderr).trim() || err.message}`));
      else resolve();
    });
  });
}

/** One syncfs per store of the list (the filesystems of their objects/ directories), at once. */
export function syncStores(stores: string[]): Promise<void> {
  return Promise.all(stores.map((s) => syncFilesystem(path.join(s, OBJECTS_DIR)))).then(() => undefined);
}

export interface StoreStats {
  /** Distinct objects this writer added to a store. */
  objectsNew: number;
  /** Distinct objects that were already in some store. */
  objectsPresent: number;
  bytesNew: number;
  /** Of objectsNew, those made by cloning a file (putClone): no data written, extents shared. */
  objectsCloned: number;
}

/** What StoreWriter.adopt() added. */
export interface AdoptStats {
  objectsNew: number;
  /** Of objectsNew, the given files themselves (linked), not copies, and their bytes. */
  objectsLinked: number;
  bytesLinked: number;
  bytesNew: number;
  /** Already there (another writer made the same object meanwhile). */
  objectsPresent: number;
}

/** StoreWriter.adopt() changed nothing: a file is missing, not a regular file, or of another size. */
export class AdoptMismatch extends Error {}

/** copyFile(FICLONE_FORCE) errors that mean "no clone from here to there", not a failure. */
const NO_CLONE = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY', 'EPERM']);

export interface StoreWriterOptions {
  /** Objects per batch handed to the writer thread. */
  batchObjects?: number;
  /** Bytes of object contents queued for the writer thread before putBuffer() waits. */
  maxQueuedBytes?: number;
  /**
   * A file to which the writer thread appends the hex digest of every object it adds, one a
   * line, BEFORE the object appears in a store: whoever collects garbage later knows every
   * object this writer may have created, even if the process is killed mid-way.
   */
  journal?: string;
  /**
   * Create objects as unnamed files linked in when complete (O_TMPFILE + linkat, through the
   * addon), where the addon is built and the filesystem can; otherwise (and when false) as
   * temp files renamed into place. Both are crash-safe; the first costs the kernel less.
   */
  tmpfile?: boolean;
  /**
   * Start the writer thread now rather than with the first batch: its start-up (a thread that
   * loads its modules, ~50 ms) then overlaps the caller's reading of the layer instead of
   * delaying a small layer's only batch. The caller must close() (or abort()) in every case.
   */
  startNow?: boolean;
  /**
   * Batches not yet done by the writer thread at which this thread hashes the next batch itself
   * (default 2). 0: always here; Infinity: never (tests use both to check either side).
   */
  writerBehindBatches?: number;
  /**
   * Hash every content and decide which are new, but write none: deferred() lists the new ones
   * (digest and size) once flush() has resolved. For a caller that holds the same contents as
   * files and links them in afterwards (adopt()): the snapshotter, whose compile ahead
   * reads a layer containerd is applying into an upper at the same time.
   */
  deferNew?: boolean;
}

const BATCH_BYTES = 4 << 20;
/** Batches not yet done by the writer thread at which the main thread hashes the next one itself. */
const WRITER_BEHIND_BATCHES = 2;
/**
 * Bytes queued for the writer thread by default: four batches keep it busy (it is the slower
 * side when objects are new); 64 MiB only raised peak RSS (by ~25 MB on Debian image a).
 */
const QUEUED_BYTES = 16 << 20;

/** Contents collected for one message to the writer thread, and where their digests go. */
class Batch {
  readonly offsets: number[] = [0];
  /** Per content, the Buffer that receives its digest when the writer thread has hashed it. */
  readonly slots: Buffer[] = [];
  /** The items that are parts of streamed contents. */
  readonly parts: StreamPart[] = [];
  used = 0;

  constructor(readonly data: Buffer, private readonly maxObjects: number) {}

  get count(): number {
    return this.slots.length;
  }

  fits(size: number): boolean {
    return this.used + size <= this.data.length && this.count < this.maxObjects;
  }

  add(content: Buffer, slot: Buffer): void {
    content.copy(this.data, this.used);
    this.used += content.length;
    this.offsets.push(this.used);
    this.slots.push(slot);
  }

  /**
   * Hash the whole contents on this thread: their digests, in order (stream parts' left
   * unset), in a Buffer with its own ArrayBuffer (it is transferred); the slots are filled too.
   */
  hash(): Buffer {
    const digests = Buffer.allocUnsafeSlow(this.count * 32);
    let p = 0;
    for (let i = 0; i < this.count; i++) {
      if (p < this.parts.length && this.parts[p].item === i) {
        p++;
        continue;
      }
      const d = hashBufferScratch(this.data.subarray(this.offsets[i], this.offsets[i + 1]));
      d.copy(digests, i * 32);
      d.copy(this.slots[i]);
    }
    return digests;
  }

  /** Room for one more part of a streamed content (at least a little data, or its end). */
  fitsPart(): boolean {
    return this.used + STREAM_PART_MIN <= this.data.length && this.count < this.maxObjects;
  }

  /** A run of zeros (a hole of a sparse file) as one part of a streamed content: no bytes carried. */
  addZeros(part: StreamPart): void {
    this.parts.push({ ...part, item: this.count });
    this.add(EMPTY, PART_SLOT);
  }

  /** Add as much of `chunk` as fits, as one part of a streamed content; returns the bytes taken. */
  addPart(chunk: Buffer, part: StreamPart): number {
    const n = Math.min(chunk.length, this.data.length - this.used);
    this.parts.push({ ...part, item: this.count });
    // only the last part's digest is the content's: the others share a slot nobody reads
    this.add(chunk.subarray(0, n), part.last ? digestSlot(32) : PART_SLOT);
    return n;
  }

  /**
   * What the batch weighs in the writer's queue: its bytes, and a page for each part of a
   * streamed content, so that a sparse file of millions of holes (parts without bytes) cannot
   * queue without bound.
   */
  get weight(): number {
    return this.used + this.parts.length * 4096;
  }
}

/** The digest slot of the parts of a streamed content but its last: written by batchDone, never read. */
const PART_SLOT = Buffer.alloc(32);

/** A streamed content is not split into parts smaller than this (but for its last one). */
const STREAM_PART_MIN = 64 << 10;
const EMPTY = Buffer.alloc(0);

/**
 * Writes objects into a pool of stores (mergerfs-like): an object already in any store is
 * reused; a new one goes to the store with the most free space. Contents held in memory are
 * hashed and written by a worker thread in batches (store-worker.ts), so the digest putBuffer()
 * returns is filled in later: its bytes are valid once flush() (or sync()) has resolved.
 * Streamed contents (putStream) go there too, in parts. Call flush() (or sync()) before
 * trusting the store or the digests, and close() in every case (abort() after an error).
 */
export class StoreWriter {
  readonly stores: string[];
  readonly stats: StoreStats = { objectsNew: 0, objectsPresent: 0, bytesNew: 0, objectsCloned: 0 };
  private batch: Batch | null = null;
  private worker: Worker | null = null;
  private workerExited: Promise<void> = Promise.resolve();
  /** Batches sent and not yet done, oldest first (the worker answers in order). */
  private queued: Batch[] = [];
  private queuedBytes = 0;
  /** Batch buffers the worker handed back, for reuse (fresh memory costs a page fault per 4 KiB). */
  private spare: Buffer[] = [];
  private wakeups: (() => void)[] = [];
  private streamTemps = new Set<string>();
  private failure: Error | null = null;
  private readonly tag = `${TEMP_PREFIX}${process.pid}-${crypto.randomBytes(4).toString('hex')}-`;
  private tempCounter = 0;
  /** The stores' st_dev, and per device whether putClone() can clone from it (see canClone). */
  private storeDevs: number[] | null = null;
  private readonly cloneDevs = new Map<number, boolean>();
  private freeBytes: number[];
  private writtenSinceStatfs = 0;
  private readonly batchObjects: number;
  private readonly maxQueuedBytes: number;
  private readonly journal: string | undefined;
  private readonly tmpfile: boolean;
  private readonly deferNew: boolean;
  private readonly deferredObjects: DeferredObject[] = [];
  private readonly fileMode = 0o444;
  /** Batches posted to the writer thread, and (shared with it) how many it has done. */
  private sentBatches = 0;
  private readonly progress = new Int32Array(new SharedArrayBuffer(4));
  private readonly writerBehindBatches: number;
  /** Called with the writer thread's answer to `adopt`, or null if it died (see adopt()). */
  private onAdopted: ((m: AdoptedMessage | null) => void) | null = null;
  /** Called when the writer thread answers `end` (see close()). */
  private onEnded: (() => void) | null = null;
  /** Removes this writer's listeners from the thread, before another StoreWriter takes it. */
  private detach: (() => void) | null = null;

  constructor(stores: string[], opts: StoreWriterOptions = {}) {
    if (stores.length === 0) throw new Error('at least one --store is required');
    this.stores = stores.map((s) => path.resolve(s));
    this.batchObjects = opts.batchObjects ?? 1024;
    this.maxQueuedBytes = opts.maxQueuedBytes ?? QUEUED_BYTES;
    this.journal = opts.journal;
    this.tmpfile = opts.tmpfile ?? true;
    this.deferNew = opts.deferNew ?? false;
    this.writerBehindBatches = opts.writerBehindBatches ?? WRITER_BEHIND_BATCHES;
    for (const s of this.stores) {
      makeDirs(path.join(s, OBJECTS_DIR));
      cleanStaleTemps(s);
    }
    this.freeBytes = this.stores.map(freeSpace);
    if (opts.startNow) this.startWorker();
  }

  /** The writer thread's id while this writer has one (StoreWriters in turn share one thread). */
  get threadId(): number | null {
    return this.worker?.threadId ?? null;
  }

  /**
   * Store a content held in memory (copied: the caller may reuse it). Returns the Buffer that
   * will hold its digest: filled in by the writer thread, valid after flush().
   */
  async putBuffer(content: Buffer): Promise<Buffer> {
    this.throwIfFailed();
    if (this.batch && !this.batch.fits(content.length)) await this.send();
    this.batch ??= this.newBatch(content.length);
    const slot = digestSlot(32);
    this.batch.add(content, slot);
    return slot;
  }

  /** Whether putBufferSync() can take a content of `size` bytes now (the current batch has room). */
  canPutSync(size: number): boolean {
    return this.batch === null ? this.failure === null : this.batch.fits(size);
  }

  /** putBuffer() without waiting, when canPutSync(content.length) said it can. */
  putBufferSync(content: Buffer): Buffer {
    this.throwIfFailed();
    if (this.batch && !this.batch.fits(content.length)) throw new Error('putBufferSync: no room in the batch (ask canPutSync first)');
    this.batch ??= this.newBatch(content.length);
    const slot = digestSlot(32);
    this.batch.add(content, slot);
    return slot;
  }

  /**
   * Store a content arriving as chunks (bigger than MEMORY_OBJECT_LIMIT): the chunks go to the
   * writer thread in the batches, which hashes them while it writes a temp file, then names or
   * drops it. Resolves once that is done, with the digest (valid now) and the stats counted.
   * A number among the chunks is a run of that many zeros: it stays a hole in the object file.
   */
  async putStream(chunks: AsyncIterable<BodyPiece>, size: number): Promise<Buffer> {
    this.throwIfFailed();
    const store = this.stores.indexOf(this.chooseStore(size));
    const tmp = path.join(this.stores[store], OBJECTS_DIR, `${this.tag}${(this.tempCounter++).toString(36)}`);
    this.streamTemps.add(tmp);
    let first = true;
    const part = async (chunk: Buffer, last: boolean, abort = false) => {
      if (this.batch && !this.batch.fitsPart()) await this.send();
      this.batch ??= this.newBatch(0);
      const n = this.batch.addPart(chunk, { item: -1, tmp, store, first, last, abort });
      first = false;
      return n;
    };
    const zeros = async (n: number) => {
      if (this.batch && !this.batch.fitsPart()) await this.send();
      this.batch ??= this.newBatch(0);
      this.batch.addZeros({ item: -1, tmp, store, first, last: false, abort: false, zeros: n });
      first = false;
    };
    try {
      for await (const chunk of chunks) {
        if (typeof chunk === 'number') await zeros(chunk);
        else for (let at = 0; at < chunk.length; ) at += await part(chunk.subarray(at), false);
      }
    } catch (err) {
      // The writer thread closes and removes the temp file (abort() removes it if that fails).
      await part(EMPTY, true, true).catch(() => {});
      throw err;
    }
    await part(EMPTY, true);
    const done = this.batch!;
    await this.send();
    while (this.queued.includes(done)) await this.nextDone();
    this.throwIfFailed();
    this.streamTemps.delete(tmp);
    return done.slots[done.count - 1];
  }

  /**
   * Whether putClone() can clone files of device `dev` into a store: true (a clone succeeded
   * there), false (no store there, or the filesystem cannot), undefined (not tried yet: call
   * putClone() alone once, awaited; after true, calls may overlap).
   */
  canClone(dev: number): boolean | undefined {
    return this.cloneDevs.get(dev);
  }

  /**
   * Store a file by cloning it (FICLONE: a new inode sharing the file's extents, no data written)
   * into a store on the file's filesystem, where that filesystem can (XFS with reflink, btrfs),
   * then naming the clone by its digest. The clone is hashed, not the file: a file that changes
   * meanwhile cannot put a wrong name on an object. Returns null when the device cannot clone
   * (found on the first try, remembered: canClone()); then store the content as usual. Once a
   * device has cloned, a file that cannot be cloned is copied by the kernel into the temp name
   * instead, so calls for it never return null and may overlap (async I/O on libuv's threadpool;
   * no batch of the writer thread is touched). A clone takes no data space, so the store with
   * the most free space does not matter here.
   */
  async putClone(file: string | Buffer, dev: number): Promise<{ digest: Buffer; size: number } | null> {
    this.throwIfFailed();
    if (this.cloneDevs.get(dev) === false) return null;
    this.storeDevs ??= this.stores.map((s) => fs.statSync(s).dev);
    const store = this.stores.find((_, i) => this.storeDevs![i] === dev);
    if (store === undefined) {
      this.cloneDevs.set(dev, false);
      return null;
    }
    const tmp = path.join(store, OBJECTS_DIR, `${this.tag}c${(this.tempCounter++).toString(36)}`);
    this.streamTemps.add(tmp);
    try {
      let cloned = true;
      try {
        await fsp.copyFile(file, tmp, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE_FORCE);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (!NO_CLONE.has(code)) throw err;
        await fsp.rm(tmp, { force: true });
        if (this.cloneDevs.get(dev) !== true) {
          this.cloneDevs.set(dev, false);
          return null;
        }
        await fsp.copyFile(file, tmp, fs.constants.COPYFILE_EXCL);
        cloned = false;
      }
      this.cloneDevs.set(dev, true);
      const size = (await fsp.stat(tmp)).size;
      const digest = size <= MEMORY_OBJECT_LIMIT ? hashBuffer(await fsp.readFile(tmp)) : await hashFile(tmp);
      const final = objectPath(store, digest);
      if (findObject(this.stores, digest) !== null) {
        this.stats.objectsPresent++;
      } else {
        await fsp.chmod(tmp, this.fileMode);
        makeDirs(path.dirname(final));
        try {
          await fsp.link(tmp, final); // never over an object another writer just named
          this.stats.objectsNew++;
          if (cloned) this.stats.objectsCloned++;
          else this.stats.bytesNew += size;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          this.stats.objectsPresent++;
        }
      }
      return { digest, size };
    } finally {
      await fsp.rm(tmp, { force: true });
      this.streamTemps.delete(tmp);
    }
  }

  /**
   * Files that hold objects' contents become those objects: on a store's filesystem a hard link
   * (the file chowned to us and made 0444 first: its other names see that too), elsewhere, or
   * for items marked `copy`, a copy. For contents already written once, as a layer's files that
   * containerd applied into an upper about to be emptied (the snapshotter, with deferNew): no
   * byte is written again. The caller vouches that each file holds the content its digest
   * names; each is checked to be a regular file of the item's size (one with holes also by its
   * digest: an overlayfs metacopy copy-up leaves a sparse stub of the full size), ALL before
   * anything changes: AdoptMismatch then, with nothing changed. Not durable until a syncfs, as put*().
   */
  async adopt(items: readonly AdoptItem[]): Promise<AdoptStats> {
    await this.flush();
    const w = this.startWorker();
    const m = await new Promise<AdoptedMessage | null>((resolve) => {
      this.onAdopted = resolve;
      w.postMessage({ type: 'adopt', items: [...items] } satisfies AdoptMessage);
    });
    this.onAdopted = null;
    this.throwIfFailed();
    if (m === null) throw new Error('object store writer exited unexpectedly');
    if (m.mismatch) throw new AdoptMismatch(m.mismatch);
    this.stats.objectsNew += m.objectsNew;
    this.stats.objectsPresent += m.objectsPresent;
    this.stats.bytesNew += m.bytesNew;
    if (m.error) {
      this.failure ??= new Error(`object store: ${m.error}`);
      throw this.failure;
    }
    return { objectsNew: m.objectsNew, objectsLinked: m.objectsLinked, bytesLinked: m.bytesLinked, bytesNew: m.bytesNew, objectsPresent: m.objectsPresent };
  }

  /** With deferNew, after flush(): the new contents, not written (each once). */
  deferred(): readonly DeferredObject[] {
    return this.deferredObjects;
  }

  /** Wait until every queued object is written; throws the first write error. */
  async flush(): Promise<void> {
    await this.send();
    while (this.queued.length > 0) await this.nextDone();
    this.throwIfFailed();
  }

  /** flush(), then one syncfs per store. */
  async sync(): Promise<void> {
    await this.flush();
    await this.startSync();
  }

  /**
   * After flush(): one syncfs per store, each in a child process started before this returns,
   * so the caller can work (encode the blob) while they run.
   */
  startSync(): Promise<void> {
    return syncStores(this.stores);
  }

  /** After an error: let queued writes finish (or clean up), remove our temp files, stop the worker. */
  async abort(): Promise<void> {
    this.batch = null;
    while (this.queued.length > 0) await this.nextDone();
    // The writer may have moved a stream to another store (out of space): same name there.
    for (const t of this.streamTemps) for (const store of this.stores) fs.rmSync(path.join(store, OBJECTS_DIR, path.basename(t)), { force: true });
    this.streamTemps.clear();
    await this.close();
  }

  /**
   * Done with the writer thread (after flush() or abort()): it closes the directories it keeps
   * open, then waits, idle, for the next StoreWriter (one thread at most), or ends.
   */
  async close(): Promise<void> {
    const w = this.worker;
    const exited = this.workerExited;
    this.worker = null;
    if (!w) return;
    if (this.failure === null && this.queued.length === 0 && idleWriter === null) {
      const ended = await new Promise<boolean>((resolve) => {
        this.onEnded = () => resolve(true);
        void exited.then(() => resolve(false));
        w.postMessage({ type: 'end' } satisfies ControlMessage);
      });
      // (another writer may have parked its thread meanwhile: then this one ends)
      if (ended && idleWriter === null) {
        this.detach?.();
        keepIdle(w);
        return;
      }
      if (ended) w.postMessage({ type: 'close' } satisfies ControlMessage);
      await exited;
      return;
    }
    // Not terminate(): the thread closes the directories it keeps open, then ends by itself.
    w.postMessage({ type: 'close' } satisfies ControlMessage);
    await exited;
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  private newBatch(size: number): Batch {
    const data = size <= BATCH_BYTES ? this.spare.pop() ?? Buffer.allocUnsafeSlow(BATCH_BYTES) : Buffer.allocUnsafeSlow(size);
    return new Batch(data, this.batchObjects);
  }

  /** Hand the current batch to the writer thread; wait while too much is queued. */
  private async send(): Promise<void> {
    const b = this.batch;
    this.batch = null;
    if (b && b.count > 0) {
      // The data's own (unpooled) ArrayBuffer is transferred, not copied, and comes back with the answer.
      const msg: BatchMessage = { type: 'batch', offsets: b.offsets, data: b.data, parts: b.parts };
      const transfer = [b.data.buffer as ArrayBuffer];
      // The writer thread is behind (creating files costs it more than parsing costs us): hash
      // this batch here rather than wait for it, so both threads stay busy. Behind means batches
      // it has not done yet, from its own counter: our queue only learns of its answers when
      // this thread yields, so while we parse it looks full even when the writer is idle (then
      // this thread hashed 3.3 s of a 12.5 s rebuild of 1M files, the idle writer 2.0 s).
      if (this.sentBatches - Atomics.load(this.progress, 0) >= this.writerBehindBatches) {
        msg.digests = b.hash();
        transfer.push(msg.digests.buffer as ArrayBuffer);
      }
      this.startWorker().postMessage(msg, transfer);
      this.sentBatches++;
      this.queued.push(b);
      this.queuedBytes += b.weight;
    } else if (b) {
      this.spare.push(b.data);
    }
    while (this.queuedBytes > this.maxQueuedBytes && this.queued.length > 1) await this.nextDone();
    this.throwIfFailed();
  }

  private nextDone(): Promise<void> {
    return new Promise((resolve) => this.wakeups.push(resolve));
  }

  private batchDone(m: DoneMessage | null, error?: Error): void {
    if (m) {
      this.stats.objectsNew += m.objectsNew;
      this.stats.objectsPresent += m.objectsPresent;
      this.stats.bytesNew += m.bytesNew;
      if (m.deferred) for (const d of m.deferred) this.deferredObjects.push(d);
      if (m.error) this.failure ??= new Error(`object store: ${m.error}`);
      const b = this.queued.shift();
      if (b) {
        this.queuedBytes -= b.weight;
        const digests = Buffer.from(m.digests.buffer, m.digests.byteOffset, m.digests.byteLength);
        for (let i = 0; i < b.slots.length && (i + 1) * 32 <= digests.length; i++) digests.copy(b.slots[i], 0, i * 32, i * 32 + 32);
        if (m.data.byteLength === BATCH_BYTES) this.spare.push(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength));
      }
    }
    if (error) {
      // The worker died: nothing more will complete.
      this.failure ??= error;
      this.queued = [];
      this.queuedBytes = 0;
      this.onAdopted?.(null);
    }
    const w = this.wakeups;
    this.wakeups = [];
    for (const f of w) f();
  }

  private startWorker(): Worker {
    if (this.worker) return this.worker;
    const init: WorkerInit = {
      stores: this.stores, tempTag: `${this.tag}w`, fileMode: this.fileMode, chmod: umaskStripsRead(), journal: this.journal,
      tmpfile: this.tmpfile && addonBuilt(), defer: this.deferNew,
      progress: this.progress,
    };
    const idle = takeIdle();
    const w = idle ?? new Worker(new URL('./store-worker.js', import.meta.url), { workerData: init });
    if (idle) w.postMessage({ type: 'begin', init } satisfies ControlMessage);
    const onMessage = (m: DoneMessage | AdoptedMessage | { type: 'ended' }) => {
      if (m.type === 'ended') this.onEnded?.();
      else if (m.type === 'adopted') this.onAdopted?.(m);
      else this.batchDone(m);
    };
    const onError = (err: Error) => this.batchDone(null, new Error(`object store writer failed: ${err.message}`));
    let onExit = () => {};
    this.workerExited = new Promise((resolve) => {
      onExit = () => {
        if (this.worker === w) this.batchDone(null, new Error('object store writer exited unexpectedly'));
        resolve();
      };
    });
    w.on('message', onMessage).on('error', onError).on('exit', onExit);
    this.detach = () => void w.off('message', onMessage).off('error', onError).off('exit', onExit);
    this.worker = w;
    return w;
  }

  /** The store with the most free space (statfs refreshed every 256 MiB written). */
  private chooseStore(size: number): string {
    if (this.stores.length === 1) return this.stores[0];
    if (this.writtenSinceStatfs > 256 << 20) {
      this.freeBytes = this.stores.map(freeSpace);
      this.writtenSinceStatfs = 0;
    }
    let best = 0;
    for (let i = 1; i < this.stores.length; i++) if (this.freeBytes[i] > this.freeBytes[best]) best = i;
    this.freeBytes[best] -= size;
    this.writtenSinceStatfs += size;
    return this.stores[best];
  }
}

/**
 * A writer thread no StoreWriter uses, kept for the next one: starting a thread costs ~35 ms
 * (its modules), which the snapshotter would pay for each layer it compiles. Unref'd while idle,
 * so that it never keeps a process alive.
 */
let idleWriter: { worker: Worker; onGone: () => void } | null = null;

function keepIdle(w: Worker): void {
  const onGone = () => {
    if (idleWriter?.worker === w) idleWriter = null;
  };
  w.on('exit', onGone).on('error', onGone);
  w.unref();
  idleWriter = { worker: w, onGone };
}

function takeIdle(): Worker | null {
  const idle = idleWriter;
  idleWriter = null;
  if (!idle) return null;
  idle.worker.off('exit', idle.onGone).off('error', idle.onGone);
  idle.worker.ref();
  return idle.worker;
}

function freeSpace(store: string): number {
  const st = fs.statfsSync(store);
  return st.bavail * st.bsize;
}

let umaskCache: number | undefined;
/** Objects must be 0444 whatever the umask; chmod only when the umask would take bits away. */
function umaskStripsRead(): boolean {
  if (umaskCache === undefined) {
    umaskCache = process.umask(0);
    process.umask(umaskCache);
  }
  return (umaskCache & 0o444) !== 0;
}
