// `cfs fsck BLOB --store DIR...`: check a blob and the objects it needs, reporting every problem
// found rather than stopping at the first. What is checked:
//   - header (magic, CRC, version, section table: openBlob's checks) and every section's CRC;
//   - every dirent and inode through a full walk (type vs dirent, parents, cycles), plus each
//     inode's xattrs, inline data, symlink target and digest index; every inode reachable;
//   - nlink (dirents naming a file; 2 + subdirectories for a directory), dirent_count, data_bytes;
//   - DIGESTS sorted and unique; one size per object;
//   - each object: present in some store (the first one that has it is the one checked, as a
//     reader would serve it), a regular file of the right size, and (unless --no-content) with
//     the right fs-verity digest.
// Problem lines name the path (SPEC §9 escaping) or the object, one per line.
import fs from 'node:fs';
import os from 'node:os';
import type { Command } from 'commander';
import { BlobError, type BlobReader } from '../format/decode.js';
import { escapeBytes } from '../format/dump.js';
import { crc32c } from '../format/crc32c.js';
import { Layout, SECTION_NAMES, SectionId } from '../format/layout.js';
import { hashFileSkippingHoles, skipsHoles } from './holes.js';
import { findObject, newVerityHasher } from './store.js';
import { openBlobFile, writeStdout } from './inspect.js';
import { checkStoresExist, collectStores } from './options.js';

export interface FsckOptions {
  stores: string[];
  /** Rehash every object (default true); false only checks presence and size. */
  content?: boolean;
  /** Objects hashed at once (default: CPU count, at most 8). */
  concurrency?: number;
}

export interface FsckResult {
  problems: string[];
  inodes: number;
  dirents: number;
  objects: number;
  objectsChecked: number;
  contentChecked: boolean;
}

const errMessage = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Section CRCs, every one (the reader's checkSections stops at the first). */
function checkSectionCrcs(reader: BlobReader, problems: string[]): void {
  reader.header.sections.forEach((s, id) => {
    let crc = 0;
    const chunk = 1 << 20;
    for (let at = 0; at < s.size; at += chunk) crc = crc32c(reader.src.read(s.offset + at, Math.min(chunk, s.size - at)), crc);
    if (crc !== s.crc) {
      problems.push(`section ${SECTION_NAMES[id]}: checksum mismatch (stored 0x${s.crc.toString(16).padStart(8, '0')},` +
        ` computed 0x${crc.toString(16).padStart(8, '0')})`);
    }
  });
}

interface ObjectUse {
  digestIndex: number;
  size: number;
  /** First path that uses it (escaped). */
  path: string;
}

/** Walk and read everything; returns the objects the blob needs. */
function checkTree(reader: BlobReader, problems: string[], counts: { dirents: number }): Map<number, ObjectUse> {
  const h = reader.header;
  const objects = new Map<number, ObjectUse>();
  const direntsNaming = new Map<number, number>();
  const subdirs = new Map<number, number>();
  const firstPath = new Map<number, string>();
  let walkError: string | undefined;
  try {
    for (const { path, ino, inode, parent } of reader.walk()) {
      const shown = escapeBytes(path);
      if (path !== '/') {
        counts.dirents++;
        direntsNaming.set(ino, (direntsNaming.get(ino) ?? 0) + 1);
        if (inode.type === 'dir') subdirs.set(parent, (subdirs.get(parent) ?? 0) + 1);
      }
      if (firstPath.has(ino)) continue; // a hardlink: its inode was read at its first name
      firstPath.set(ino, shown);
      try {
        reader.xattrs(ino);
        if (inode.type === 'lnk') reader.readlink(ino);
        if (inode.type === 'reg' && inode.layout === Layout.INLINE) reader.readInline(ino);
        if (inode.type === 'reg' && inode.layout === Layout.EXTERNAL) {
          reader.digest(inode.payload);
          const use = objects.get(inode.payload);
          if (use === undefined) objects.set(inode.payload, { digestIndex: inode.payload, size: inode.size, path: shown });
          else if (use.size !== inode.size) {
            problems.push(`${shown}: size ${inode.size} differs from ${use.path} (${use.size}) with the same object`);
          }
        }
      } catch (err) {
        problems.push(`${shown}: ${errMessage(err)}`);
      }
    }
  } catch (err) {
    // The walk cannot go on past a broken record; counts and reachability are then meaningless,
    // but every inode record is still read below.
    walkError = errMessage(err);
    problems.push(`walk stopped: ${walkError}`);
  }

  let dataBytes = 0;
  for (let i = 0; i < h.inodeCount; i++) {
    let inode;
    try {
      inode = reader.inode(i);
    } catch (err) {
      if (errMessage(err) !== walkError && !firstPath.has(i)) problems.push(errMessage(err));
      continue;
    }
    if (walkError !== undefined) continue;
    const shown = firstPath.get(i);
    if (shown === undefined) {
      problems.push(`inode ${i}: not reachable from the root`);
      continue;
    }
    if (inode.type === 'reg') dataBytes += inode.size;
    const expected = inode.type === 'dir' ? 2 + (subdirs.get(i) ?? 0) : direntsNaming.get(i) ?? 0;
    if (inode.nlink !== expected) problems.push(`${shown}: nlink ${inode.nlink}, expected ${expected}`);
  }
  if (walkError !== undefined) return objects;
  if (counts.dirents !== h.direntCount) problems.push(`header: dirent_count ${h.direntCount}, found ${counts.dirents}`);
  if (dataBytes !== h.dataBytes) problems.push(`header: data_bytes ${h.dataBytes}, files add up to ${dataBytes}`);

  let prev: Buffer | undefined;
  for (let k = 0; k < h.sections[SectionId.DIGESTS].count; k++) {
    const d = reader.digest(k);
    if (prev !== undefined && Buffer.compare(prev, d) >= 0) problems.push(`DIGESTS: entry ${k} is not above entry ${k - 1}`);
    prev = d;
  }
  return objects;
}

/** fs-verity digest of an open file, read from its start. */
async function hashHandle(fh: fs.promises.FileHandle): Promise<Buffer> {
  const h = newVerityHasher();
  const buf = Buffer.alloc(1 << 20);
  let pos = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    h.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return h.digest();
}

/** Problem with one object, or undefined when it is fine. */
async function checkObject(stores: string[], digest: Buffer, use: ObjectUse, content: boolean): Promise<string | undefined> {
  const hex = digest.toString('hex');
  const where = findObject(stores, digest);
  if (where === null) return `object ${hex}: missing from every store (used by ${use.path})`;
  let fh;
  try {
    // O_NOFOLLOW: a symlink swapped in after findObject's lstat is not followed out of the store.
    fh = await fs.promises.open(where, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    return `object ${hex}: ${where}: ${errMessage(err)}`;
  }
  try {
    const st = await fh.stat();
    if (st.size !== use.size) return `object ${hex}: ${where}: size ${st.size}, expected ${use.size} (used by ${use.path})`;
    if (!content) return undefined;
    const actual = skipsHoles(st) ? hashFileSkippingHoles(fh.fd, st.size) : await hashHandle(fh);
    if (!actual.equals(digest)) return `object ${hex}: ${where}: content digest is ${actual.toString('hex')} (used by ${use.path})`;
    return undefined;
  } catch (err) {
    return `object ${hex}: ${where}: ${errMessage(err)}`;
  } finally {
    await fh.close();
  }
}

/** Check a blob file and its objects; `problems` is empty when everything is fine. */
export async function fsckBlob(blobPath: string, opts: FsckOptions): Promise<FsckResult> {
  const content = opts.content ?? true;
  const result: FsckResult = { problems: [], inodes: 0, dirents: 0, objects: 0, objectsChecked: 0, contentChecked: content };
  let reader: BlobReader;
  try {
    reader = openBlobFile(blobPath);
  } catch (err) {
    result.problems.push(errMessage(err));
    return result;
  }
  try {
    result.inodes = reader.header.inodeCount;
    checkSectionCrcs(reader, result.problems);
    const counts = { dirents: 0 };
    const objects = checkTree(reader, result.problems, counts);
    result.dirents = counts.dirents;
    result.objects = objects.size;
    if (opts.stores.length === 0) return result;

    const queue = [...objects.values()];
    const workers = Math.max(1, opts.concurrency ?? Math.min(8, os.availableParallelism()));
    const found: (string | undefined)[] = new Array(queue.length);
    let next = 0;
    await Promise.all(Array.from({ length: workers }, async () => {
      while (next < queue.length) {
        const k = next++;
        found[k] = await checkObject(opts.stores, reader.digest(queue[k].digestIndex), queue[k], content);
      }
    }));
    // Report in digest order whatever order the workers finished in.
    for (const p of found) if (p !== undefined) result.problems.push(p);
    result.objectsChecked = queue.length;
    return result;
  } catch (err) {
    if (!(err instanceof BlobError)) throw err;
    result.problems.push(errMessage(err));
    return result;
  } finally {
    reader.close();
  }
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export function registerFsck(program: Command): void {
  program
    .command('fsck')
    .description('check a blob (header, section CRCs, every inode and dirent) and its objects (present, size, fs-verity digest)')
    .argument('<blob>')
    .option('--store <dir>', 'object store (repeatable; searched in order)', collectStores, [])
    .option('--no-content', 'check objects for presence and size only, without rehashing them')
    .action(async (blob: string, o: { store: string[]; content: boolean }) => {
      checkStoresExist(o.store);
      const r = await fsckBlob(blob, { stores: o.store, content: o.content });
      if (o.store.length === 0 && r.objects > 0) process.stderr.write(`cfs: fsck: no --store given, ${plural(r.objects, 'object')} not checked\n`);
      for (const p of r.problems) await writeStdout(p + '\n');
      if (r.problems.length > 0) {
        process.stderr.write(`cfs: fsck: ${blob}: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}\n`);
        process.exitCode = 1;
        return;
      }
      await writeStdout(`${blob}: ok: ${r.inodes} inodes, ${r.dirents} dirents, ${plural(r.objectsChecked, 'object')}` +
        `${r.objectsChecked > 0 ? (r.contentChecked ? ' (contents verified)' : ' (size only)') : ''}\n`);
    });
}
