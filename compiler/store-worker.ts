// Worker thread of StoreWriter (store.ts): hashes and writes batches of in-memory objects with
// plain synchronous calls, on the other core, while the main thread decompresses, parses and
// builds the tree. A million objects through fs.promises cost more in promises, FileHandles and
// GC than in the kernel.
//
// For each content: compute its fs-verity digest (sent back, in order); skip it if this writer
// saw it before or any store already has it; else write it, in the store with the most free
// space, as an unnamed file (O_TMPFILE) linked to its name once complete, or where that is not
// possible to a temp file renamed to its name: never a partial file under an object name. A
// failed object's temp file is removed before the error is reported. When this thread falls
// behind, the main thread hashes batches itself and sends their digests along.
import fs from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { hashBufferScratch, newVerityHasher } from './store.js';
import type { VerityHasher } from '../format/verity.js';
import { isTmpfileUnsupported, loadAddon, writeObjectFile } from '../mounter/addon.js';

export interface WorkerInit {
  stores: string[];
  /** Prefix of temp file names, unique to this writer: ".../objects/.tmp-<pid>-<random>-". */
  tempTag: string;
  fileMode: number;
  /** chmod after create (the umask would strip bits of fileMode). */
  chmod: boolean;
  /** See StoreWriterOptions.journal. */
  journal?: string;
  /** Create objects with the addon's writeObjectFile (O_TMPFILE + linkat); false: temp + rename. */
  tmpfile: boolean;
  /** Hash only: new objects are reported (DoneMessage.deferred), not written (see StoreWriterOptions.deferNew). */
  defer?: boolean;
  /**
   * [0]: batches handled so far, counted here as each is done. The main thread reads it with
   * Atomics while it parses, without waiting for our answers (it sees those only when it yields).
   */
  progress: Int32Array;
}

/** An item of a batch that is one piece of a streamed content (the others are whole contents). */
export interface StreamPart {
  /** Index of the item in the batch. */
  item: number;
  /** Temp file the content is written to, in objects/ of stores[store]. */
  tmp: string;
  store: number;
  /** The first part creates the temp file; the last one names or removes it. */
  first: boolean;
  last: boolean;
  /** The content's source failed: close and remove the temp file (a last, empty part). */
  abort: boolean;
  /** A run of this many zero bytes (a hole of a sparse file; the item carries no bytes): left a hole. */
  zeros?: number;
}

export interface BatchMessage {
  type: 'batch';
  /** n+1 offsets into data: item i is data[offsets[i], offsets[i+1]). */
  offsets: number[];
  /** Its ArrayBuffer is transferred here and back (in DoneMessage.data) for reuse. */
  data: Uint8Array;
  /** The items that are parts of streamed contents, in item order. */
  parts: StreamPart[];
  /**
   * n digests of 32 bytes when the main thread hashed the batch's whole contents itself (it
   * does when this thread is behind); the entries of stream parts are not set.
   */
  digests?: Uint8Array;
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
  /** With WorkerInit.defer: the new objects of the batch, not written. */
  deferred?: DeferredObject[];
  error?: string;
}

/** A new object that a deferring writer did not write: its hex digest and size. */
export interface DeferredObject {
  hex: string;
  size: number;
}

/** A file that holds an object's content, to become that object (see StoreWriter.adopt). */
export interface AdoptItem {
  /** The object's digest, 64 hex digits. */
  hex: string;
  size: number;
  /** Path of a regular file with exactly that content (bytes: any name). */
  file: Uint8Array;
  /** Copy it rather than link it (it carries xattrs an object must not have). */
  copy?: boolean;
}

export interface AdoptMessage {
  type: 'adopt';
  items: AdoptItem[];
}

export interface AdoptedMessage {
  type: 'adopted';
  objectsNew: number;
  /** Of objectsNew, those that are the given files (linked), not copies, and their bytes. */
  objectsLinked: number;
  bytesLinked: number;
  bytesNew: number;
  objectsPresent: number;
  /** A file is missing, not regular or of another size: nothing was changed. */
  mismatch?: string;
  error?: string;
}

// The state of one StoreWriter's session (see begin()): a thread serves one StoreWriter at a
// time, and may serve another after it (StoreWriter keeps an idle thread: starting one costs
// ~35 ms, a layer's compile in the snapshotter).
let init: WorkerInit;
let objectsDirs: string[];
/** Digests (binary strings) handled already: present, or written by us. */
let known: Set<string>;
/**
 * Per store, what we know of each fan-out directory ("ab"), from a first look at it:
 * - 'missing': it did not exist; 'ours': we created it. No object in it needs a lookup, so an
 *   empty store costs no "already there?" call per object. (A concurrent writer's identical
 *   object may then be replaced by ours, by rename: harmless.)
 * - a Set: the names of the regular files it held (one readdir costs a fraction of an lstat
 *   per object: 0.4 vs 0.9-2.6 s of CPU for 549k objects);
 * - 'lookup': too big to list (see LIST_LIMIT), or made by another writer meanwhile: one
 *   lstat per object.
 */
type Fanout = 'missing' | 'ours' | 'lookup' | Set<string>;
let fanouts: Map<string, Fanout>[];
/**
 * Directory size (bytes) up to which a fan-out directory is listed: about 5,000 names on ext4,
 * so the listings of a store's 256 fan-out directories stay under ~100 MB however big it is.
 */
const LIST_LIMIT = 512 << 10;
let counter = 0;
let free: number[];
let writtenSinceStatfs = 0;

function freeSpace(dir: string): number {
  const st = fs.statfsSync(dir);
  return st.bavail * st.bsize;
}

function fanoutState(d: number, fan: string): Fanout {
  let state = fanouts[d].get(fan);
  if (state === undefined) {
    state = firstLook(`${objectsDirs[d]}/${fan}`);
    fanouts[d].set(fan, state);
  }
  return state;
}

function firstLook(dir: string): Fanout {
  const st = fs.lstatSync(dir, { throwIfNoEntry: false });
  if (st === undefined) return 'missing';
  if (!st.isDirectory() || st.size > LIST_LIMIT) return 'lookup';
  const names = new Set<string>();
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isFile()) names.add(e.name);
  return names;
}

/**
 * Whether store d has the object as a regular file (of `size` bytes, where it is looked up one
 * by one; a listed name is trusted, as composefs trusts its store: `cfs fsck` checks contents).
 */
function inStore(d: number, hex: string, size: number): boolean {
  const state = fanoutState(d, hex.slice(0, 2));
  if (state instanceof Set) return state.has(hex.slice(2));
  if (state !== 'lookup') return false;
  return isObjectFile(`${objectsDirs[d]}/${hex.slice(0, 2)}/${hex.slice(2)}`, size);
}

function isObjectFile(file: string, size: number): boolean {
  const st = fs.lstatSync(file, { throwIfNoEntry: false });
  return st !== undefined && st.isFile() && st.size === size;
}

function makeFanout(d: number, fan: string): void {
  try {
    fs.mkdirSync(`${objectsDirs[d]}/${fan}`);
    fanouts[d].set(fan, 'ours');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    fanouts[d].set(fan, 'lookup'); // another writer made it meanwhile
  }
}

/**
 * Index of the store with most free space (statfs refreshed every 256 MiB written), leaving out
 * stores that refused an object for want of space (`full`).
 */
function chooseStore(size: number): number {
  if (objectsDirs.length === 1) return 0;
  if (writtenSinceStatfs > 256 << 20) {
    free = objectsDirs.map((d, i) => (full[i] ? -Infinity : freeSpace(d)));
    writtenSinceStatfs = 0;
  }
  let best = 0;
  for (let i = 1; i < free.length; i++) if (free[i] > free[best]) best = i;
  free[best] -= size;
  writtenSinceStatfs += size;
  return best;
}

/** Stores that said ENOSPC or EDQUOT (out of bytes, or of inodes, which statfs's bytes miss). */
let full: boolean[];

/**
 * writeObject in the store chooseStore picks; when that store is full, the object goes to the
 * next one (with several stores, as mergerfs's "most free space" policy moves on), and the full
 * one gets no more objects from this writer. With no store left, the error stands.
 */
function writeObjectSomewhere(hex: string, content: Uint8Array): boolean {
  for (;;) {
    const d = chooseStore(content.length);
    try {
      return writeObject(d, hex, content);
    } catch (err) {
      if (!storeIsFull(err, d)) throw err;
      markFull(d);
    }
  }
}

/** True if `err` says store d is out of space and another store can still be tried. */
function storeIsFull(err: unknown, d: number): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return (code === 'ENOSPC' || code === 'EDQUOT') && full.some((f, i) => !f && i !== d);
}

function markFull(d: number): void {
  full[d] = true;
  free[d] = -Infinity;
}

let journalFd: number | null = null;

/** Note `hex` in the journal before its object exists (see StoreWriterOptions.journal). */
function journalObject(hex: string): void {
  journalObjects([hex]);
}

function journalObjects(hexes: string[]): void {
  if (!init.journal || hexes.length === 0) return;
  journalFd ??= fs.openSync(init.journal, 'a', 0o600);
  writeAll(journalFd, Buffer.from(`${hexes.join('\n')}\n`, 'latin1'));
}

/**
 * Per store: whether objects are created as unnamed files linked in when complete (the addon's
 * writeObjectFile), rather than as temp files renamed into place. Off when the addon is not
 * built, or after the store's filesystem refused O_TMPFILE.
 */
let tmpfile: boolean[];

/** A built addon that does not load here (built for another Node) just means temp + rename. */
function addonLoads(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

/**
 * Per store, descriptors of the fan-out directories objects were linked into, kept open so that
 * creating an object walks no path (closed by closeFanoutFds() when the writer closes).
 */
let fanoutFds: Map<string, number>[];

function fanoutFd(d: number, fan: string): number {
  let fd = fanoutFds[d].get(fan);
  if (fd === undefined) {
    fd = fs.openSync(`${objectsDirs[d]}/${fan}`, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    fanoutFds[d].set(fan, fd);
  }
  return fd;
}

function closeFanoutFds(): void {
  for (const fds of fanoutFds) {
    for (const fd of fds.values()) fs.closeSync(fd);
    fds.clear();
  }
}

/** True if the object was created, false if a concurrent writer made it meanwhile. */
function writeObject(d: number, hex: string, content: Uint8Array): boolean {
  journalObject(hex);
  const fan = hex.slice(0, 2);
  if (fanoutState(d, fan) === 'missing') makeFanout(d, fan);
  const objectsDir = objectsDirs[d];
  if (tmpfile[d]) {
    try {
      // false: the name exists. A concurrent writer's object is kept; anything else under that
      // name (a symlink, a directory, a file of another size: not the object) is replaced below.
      if (writeObjectFile(fanoutFd(d, fan), hex.slice(2), content, init.fileMode, init.chmod)) return true;
      if (isObjectFile(`${objectsDir}/${fan}/${hex.slice(2)}`, content.length)) return false;
    } catch (err) {
      if (!isTmpfileUnsupported(err)) throw Object.assign(new Error(`${objectsDir}/${fan}: ${(err as Error).message}`), { code: (err as NodeJS.ErrnoException).code });
      tmpfile[d] = false;
    }
  }
  const tmp = `${objectsDir}/${init.tempTag}${(counter++).toString(36)}`;
  try {
    const fd = fs.openSync(tmp, 'wx', init.fileMode);
    try {
      writeAll(fd, content);
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
  return true;
}

interface OpenStream {
  fd: number;
  /** The temp file the main thread named (its key in `streams`, and its name in every store). */
  tmp: string;
  /** Where it is now: `tmp`, or the same name in another store after the first one filled up. */
  path: string;
  store: number;
  hasher: VerityHasher;
  size: number;
}
/** Streamed contents being written, by temp file (their parts arrive in order, over batches). */
const streams = new Map<string, OpenStream>();

function closeStream(s: OpenStream, remove: boolean): void {
  streams.delete(s.tmp);
  if (s.fd < 0) return; // deferring: never created
  try {
    fs.closeSync(s.fd);
  } finally {
    if (remove) fs.rmSync(s.path, { force: true });
  }
}

/** The hex digest of item i if it is a new object; null (counted) if we saw it or a store has it. */
function newObjectHex(digests: Buffer, i: number, size: number, reply: DoneMessage): string | null {
  const key = digests.toString('latin1', i * 32, i * 32 + 32);
  if (known.has(key)) return null;
  known.add(key);
  const hex = digests.toString('hex', i * 32, i * 32 + 32);
  if (objectsDirs.some((_, d) => inStore(d, hex, size))) {
    reply.objectsPresent++;
    return null;
  }
  return hex;
}

/**
 * Run `step` on the stream; when its store is out of space, move what the stream has written so
 * far to the store chooseStore picks next and run it again there (mergerfs's moveonenospc):
 * a streamed content cannot be read twice, so its bytes go with it. With no store left, the
 * error stands.
 */
function inRoomyStore(s: OpenStream, step: () => void): void {
  for (;;) {
    try {
      step();
      return;
    } catch (err) {
      if (!storeIsFull(err, s.store)) throw err;
      markFull(s.store);
      moveStream(s, chooseStore(s.size));
    }
  }
}

/** Copy the stream's first s.size bytes to its temp name in store d and drop the old file (or just open it there). */
function moveStream(s: OpenStream, d: number): void {
  const to = path.join(objectsDirs[d], path.basename(s.tmp));
  if (s.fd < 0) {
    // not even created where it was named (out of inodes): created here instead
    Object.assign(s, { path: to, store: d });
    return;
  }
  const fd = fs.openSync(to, 'wx+', init.fileMode);
  try {
    const chunk = Buffer.allocUnsafe(Math.min(s.size, 1 << 20));
    for (let at = 0; at < s.size; ) {
      const n = fs.readSync(s.fd, chunk, 0, Math.min(chunk.length, s.size - at), at);
      if (n === 0) throw new Error(`${s.path}: shorter than the ${s.size} bytes written to it`);
      writeAllAt(fd, chunk.subarray(0, n), at);
      at += n;
    }
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(to, { force: true });
    throw err;
  }
  fs.closeSync(s.fd);
  fs.rmSync(s.path, { force: true });
  Object.assign(s, { fd, path: to, store: d });
}

function streamPart(part: StreamPart, content: Uint8Array, digests: Buffer, reply: DoneMessage): void {
  let s = streams.get(part.tmp);
  if (part.abort) {
    if (s) closeStream(s, true);
    return;
  }
  if (part.first) {
    // Opened at its name in the main thread's store; a full store sends it on (moveStream).
    s = { fd: -1, tmp: part.tmp, path: part.tmp, store: part.store, hasher: newVerityHasher(), size: 0 };
    const open = s;
    if (!init.defer) {
      inRoomyStore(s, () => {
        if (open.fd < 0) open.fd = fs.openSync(open.path, 'wx+', init.fileMode);
      });
    }
    streams.set(part.tmp, s);
  }
  if (!s) throw new Error(`stream part for ${part.tmp}, which is not open`);
  const open = s;
  if (part.zeros) {
    // extending the file leaves the hole unwritten; the file's length always says s.size
    const end = s.size + part.zeros;
    if (!init.defer) inRoomyStore(s, () => fs.ftruncateSync(open.fd, end));
    s.hasher.updateZeros(part.zeros);
    s.size = end;
  } else {
    if (!init.defer) inRoomyStore(s, () => writeAllAt(open.fd, content, open.size));
    s.hasher.update(content);
    s.size += content.length;
  }
  if (!part.last) return;
  if (init.chmod && !init.defer) fs.fchmodSync(s.fd, init.fileMode);
  s.hasher.digest().copy(digests, part.item * 32);
  const hex = newObjectHex(digests, part.item, s.size, reply);
  if (hex === null || init.defer) {
    if (hex !== null) (reply.deferred ??= []).push({ hex, size: s.size });
    closeStream(s, true);
    return;
  }
  journalObject(hex);
  const fan = hex.slice(0, 2);
  inRoomyStore(s, () => {
    if (fanoutState(open.store, fan) === 'missing') makeFanout(open.store, fan);
    fs.renameSync(open.path, `${objectsDirs[open.store]}/${fan}/${hex.slice(2)}`);
  });
  closeStream(s, false);
  reply.objectsNew++;
  reply.bytesNew += s.size;
}

function writeAll(fd: number, content: Uint8Array): void {
  let done = 0;
  while (done < content.length) done += fs.writeSync(fd, content, done, content.length - done);
}

/** Write all of `content` at file offset `at` (a stream moved after a short write starts over there). */
function writeAllAt(fd: number, content: Uint8Array, at: number): void {
  let done = 0;
  while (done < content.length) done += fs.writeSync(fd, content, done, content.length - done, at + done);
}

function handleBatch(m: BatchMessage): DoneMessage {
  const n = m.offsets.length - 1;
  // Own ArrayBuffer: it is transferred back. Hashed by the main thread: its digests, kept.
  const digests = m.digests ? Buffer.from(m.digests.buffer, m.digests.byteOffset, n * 32) : Buffer.allocUnsafeSlow(n * 32);
  const reply: DoneMessage = { type: 'done', digests, data: m.data, objectsNew: 0, objectsPresent: 0, bytesNew: 0 };
  let p = 0;
  try {
    for (let i = 0; i < n; i++) {
      const content = m.data.subarray(m.offsets[i], m.offsets[i + 1]);
      if (p < m.parts.length && m.parts[p].item === i) {
        streamPart(m.parts[p++], content, digests, reply);
        continue;
      }
      if (!m.digests) hashBufferScratch(content).copy(digests, i * 32);
      const hex = newObjectHex(digests, i, content.length, reply);
      if (hex === null) continue;
      if (init.defer) {
        (reply.deferred ??= []).push({ hex, size: content.length });
        continue;
      }
      if (writeObjectSomewhere(hex, content)) {
        reply.objectsNew++;
        reply.bytesNew += content.length;
      } else {
        reply.objectsPresent++;
      }
    }
  } catch (err) {
    for (const s of [...streams.values()]) closeStream(s, true);
    reply.error = (err as Error).message ?? String(err);
  } finally {
    // closed after each batch, so that a writer stopped any way (even terminate()) leaves none open
    if (journalFd !== null) fs.closeSync(journalFd);
    journalFd = null;
  }
  return reply;
}

/**
 * Make each item's file the object it holds (StoreWriter.adopt). First every file is checked
 * (a regular file of the item's size; one with holes also by its digest, see fileDigestHex),
 * and nothing changes if one is not; then each digest is
 * journalled and the file linked into the first store on its filesystem, after chown to our
 * ids (before chmod: chown clears set-id bits) and chmod to the object mode. A file on no
 * store's filesystem, one we may not chown, or one marked `copy` is copied (copy_file_range, or
 * a reflink) into a temp name of the roomiest store and renamed into place. The caller vouches
 * for the contents; durability is the caller's syncfs.
 */
function adoptFiles(items: AdoptItem[]): AdoptedMessage {
  const reply: AdoptedMessage = { type: 'adopted', objectsNew: 0, objectsLinked: 0, bytesLinked: 0, bytesNew: 0, objectsPresent: 0 };
  const found: fs.Stats[] = [];
  for (const it of items) {
    const file = Buffer.from(it.file.buffer, it.file.byteOffset, it.file.byteLength);
    const st = fs.lstatSync(file, { throwIfNoEntry: false });
    const problem = st === undefined ? 'missing' : !st.isFile() ? 'not a regular file' : st.size !== it.size ? `${st.size} bytes, the object has ${it.size}`
      : st.blocks * 512 < st.size && fileDigestHex(file) !== it.hex ? 'a sparse file without the content' : null;
    if (problem !== null) {
      reply.mismatch = `${file.toString()}: ${problem}`;
      return reply;
    }
    found.push(st!);
  }
  const uid = process.geteuid!();
  const gid = process.getegid!();
  storeDevs ??= objectsDirs.map((d) => fs.statSync(d).dev);
  try {
    // every digest in one write, before the first object appears
    journalObjects(items.map((it) => it.hex));
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      const st = found[i];
      const file = Buffer.from(it.file.buffer, it.file.byteOffset, it.file.byteLength);
      const home = !it.copy && (uid === 0 || st.uid === uid) ? storeDevs.indexOf(st.dev) : -1;
      let added: boolean;
      if (home >= 0) {
        if (st.uid !== uid || st.gid !== gid) fs.chownSync(file, uid, gid);
        if ((st.mode & 0o7777) !== init.fileMode) fs.chmodSync(file, init.fileMode);
        added = linkObject(home, it.hex, file, it.size);
        if (added) {
          reply.objectsLinked++;
          reply.bytesLinked += it.size;
        }
      } else {
        added = copyObjectSomewhere(it.hex, file, it.size);
      }
      if (added) {
        reply.objectsNew++;
        reply.bytesNew += it.size;
      } else {
        reply.objectsPresent++;
      }
    }
  } catch (err) {
    reply.error = (err as Error).message ?? String(err);
  } finally {
    if (journalFd !== null) fs.closeSync(journalFd);
    journalFd = null;
  }
  return reply;
}

/**
 * The fs-verity digest of a file's content, read in 1 MiB chunks. adoptFiles checks files with
 * holes this way: an overlayfs metadata-only copy-up (metacopy=on) leaves the upper a sparse
 * file of the full size with no data, whose bytes are not the content (a file with real holes
 * passes: they read as the zeros they are).
 */
function fileDigestHex(file: Buffer): string {
  const hasher = newVerityHasher();
  const fd = fs.openSync(file, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1 << 20);
    for (let n; (n = fs.readSync(fd, chunk, 0, chunk.length, null)) > 0; ) hasher.update(chunk.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hasher.digest().toString('hex');
}

/** Per store, st_dev of its objects/ directory (for adoptFiles). */
let storeDevs: number[] | null;

/**
 * link(2) `file` under the object's name in store d; false when an object of that size is there
 * already (a concurrent writer's, kept). Anything else there is replaced (temp link, rename).
 */
function linkObject(d: number, hex: string, file: Buffer, size: number): boolean {
  const fan = hex.slice(0, 2);
  const target = `${objectsDirs[d]}/${fan}/${hex.slice(2)}`;
  // no first look at the fan-out directory (a readdir each): link(2) says EEXIST, or ENOENT
  // while the directory is missing (the file was checked a moment ago)
  for (let tries = 0; ; tries++) {
    try {
      fs.linkSync(file, target);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && tries === 0 && !fs.existsSync(`${objectsDirs[d]}/${fan}`)) {
        makeFanout(d, fan);
        continue;
      }
      if (code !== 'EEXIST') throw err;
      break;
    }
  }
  if (isObjectFile(target, size)) return false;
  const tmp = `${objectsDirs[d]}/${init.tempTag}${(counter++).toString(36)}`;
  fs.linkSync(file, tmp);
  try {
    fs.renameSync(tmp, target);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  return true;
}

/** A copy of `file` as the object, in the store chooseStore picks (the next one when that is full). */
function copyObjectSomewhere(hex: string, file: Buffer, size: number): boolean {
  for (;;) {
    const d = chooseStore(size);
    try {
      return copyObject(d, hex, file, size);
    } catch (err) {
      if (!storeIsFull(err, d)) throw err;
      markFull(d);
    }
  }
}

function copyObject(d: number, hex: string, file: Buffer, size: number): boolean {
  const fan = hex.slice(0, 2);
  if (fanoutState(d, fan) === 'missing') makeFanout(d, fan);
  const target = `${objectsDirs[d]}/${fan}/${hex.slice(2)}`;
  if (isObjectFile(target, size)) return false;
  const tmp = `${objectsDirs[d]}/${init.tempTag}${(counter++).toString(36)}`;
  try {
    fs.copyFileSync(file, tmp, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
    fs.chmodSync(tmp, init.fileMode);
    fs.renameSync(tmp, target);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  return true;
}

/** Start serving a StoreWriter: nothing of the previous one's is kept (a gc may have run since). */
function begin(i: WorkerInit): void {
  init = i;
  objectsDirs = init.stores.map((s) => path.join(s, 'objects'));
  known = new Set();
  fanouts = objectsDirs.map(() => new Map());
  counter = 0;
  free = objectsDirs.map(freeSpace);
  full = objectsDirs.map(() => false);
  writtenSinceStatfs = 0;
  tmpfile = objectsDirs.map(() => init.tmpfile && addonLoads());
  fanoutFds = objectsDirs.map(() => new Map());
  storeDevs = null;
}

begin(workerData as WorkerInit);

/**
 * Messages besides batches: `end` finishes a StoreWriter's session (answered with `ended` once
 * the directories we kept open are closed), `begin` starts the next one, `close` ends the thread.
 */
export type ControlMessage = { type: 'end' } | { type: 'begin'; init: WorkerInit } | { type: 'close' };

parentPort!.on('message', (m: BatchMessage | ControlMessage | AdoptMessage) => {
  if (m.type === 'close' || m.type === 'end') {
    for (const s of [...streams.values()]) closeStream(s, true);
    closeFanoutFds();
    if (m.type === 'close') parentPort!.close();
    else parentPort!.postMessage({ type: 'ended' });
    return;
  }
  if (m.type === 'begin') {
    begin(m.init);
    return;
  }
  if (m.type === 'adopt') {
    parentPort!.postMessage(adoptFiles(m.items));
    return;
  }
  const reply = handleBatch(m);
  Atomics.add(init.progress, 0, 1);
  const data = reply.data;
  parentPort!.postMessage(reply, [reply.digests.buffer as ArrayBuffer, ...(data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? [data.buffer as ArrayBuffer] : [])]);
});
