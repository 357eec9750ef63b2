// Read-only looks into a blob: `cfs info`, `cfs ls`, `cfs cat`, `cfs dump`. Each command is a
// programmatic function returning data plus a thin commander action that prints it. The small
// helpers at the top (opening a blob, printing names, stdout that survives `| head`) are shared
// by extract, fsck and gc.
import fs from 'node:fs';
import type { Command } from 'commander';
import { BlobError, openBlob, sourceFromFile, type BlobReader, type Inode } from '../format/decode.js';
import { escapeBytes, dumpBlob } from '../format/dump.js';
import { Layout, SECTION_NAMES, SectionId } from '../format/layout.js';
import type { FileType } from '../format/tree.js';
import { findObject, hashFile } from './store.js';
import { checkStoresExist, collectStores } from './options.js';

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** Open a blob file; errors name the file ("x.ub: corrupt blob: ...", "x.ub: no such file"). */
export function openBlobFile(blobPath: string): BlobReader {
  // not opened unless a regular file: a FIFO would block the open, a directory says EISDIR
  const st = fs.statSync(blobPath, { throwIfNoEntry: false });
  if (st && !st.isFile()) throw Object.assign(new Error(`${blobPath}: not a regular file (a blob is a file)`), { code: 'EINVAL' });
  let src;
  try {
    src = sourceFromFile(blobPath);
  } catch (err: any) {
    // keep the code: callers tell a file they cannot read from a file that is not a blob
    throw Object.assign(new Error(`${blobPath}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`), { code: err.code });
  }
  try {
    return openBlob(src);
  } catch (err: any) {
    src.close();
    throw err instanceof BlobError ? new Error(`${blobPath}: ${err.message}`) : err;
  }
}

/** Run `fn` with an open reader and close it afterwards; BlobErrors get the file name. */
export async function withBlob<T>(blobPath: string, fn: (reader: BlobReader) => T | Promise<T>): Promise<T> {
  const reader = openBlobFile(blobPath);
  try {
    return await fn(reader);
  } catch (err: any) {
    throw err instanceof BlobError ? new Error(`${blobPath}: ${err.message}`) : err;
  } finally {
    reader.close();
  }
}

/**
 * A path typed on the command line as the binary string the blob compares against. Node decodes
 * argv as UTF-8, replacing invalid bytes with U+FFFD; for such an argument the raw bytes are
 * taken from /proc/self/cmdline (Linux), so names that are not UTF-8 can be named too.
 */
export function binaryOfArg(s: string): string {
  if (s.includes('\ufffd')) {
    try {
      const raw = fs.readFileSync('/proc/self/cmdline').toString('latin1').split('\0');
      const match = raw.find((a) => Buffer.from(a, 'latin1').toString('utf8') === s);
      if (match !== undefined) return match;
    } catch {
      // no /proc: fall back to the decoded string
    }
  }
  return Buffer.from(s, 'utf8').toString('latin1');
}

/** Length of the valid UTF-8 sequence at bytes[i], or 0 when the byte does not start one. */
function utf8SequenceLength(bytes: Buffer, i: number): number {
  const b = bytes[i];
  if (b < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => i + k < bytes.length && bytes[i + k] >= lo && bytes[i + k] <= hi;
  if (b >= 0xc2 && b <= 0xdf) return cont(1) ? 2 : 0;
  if (b === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if (b === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0; // no UTF-16 surrogates
  if (b >= 0xe1 && b <= 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (b === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (b >= 0xf1 && b <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

/**
 * A name (binary string) for humans: valid UTF-8 is printed as text; bytes that are not valid
 * UTF-8 and control characters become `\xHH`, and `\` becomes `\\`, so every name stays on one
 * line and distinct names print differently.
 */
export function displayName(name: string): string {
  const bytes = Buffer.from(name, 'latin1');
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const n = utf8SequenceLength(bytes, i);
    const ch = n > 0 ? bytes.toString('utf8', i, i + n) : '';
    const cp = ch.codePointAt(0) ?? 0;
    if (n === 0 || cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) {
      for (let k = 0; k < Math.max(n, 1); k++) out += '\\x' + bytes[i + k].toString(16).padStart(2, '0');
      i += Math.max(n, 1);
    } else {
      out += ch === '\\' ? '\\\\' : ch;
      i += n;
    }
  }
  return out;
}

let stdoutGuarded = false;
/** A reader that went away (`cfs dump x | head`) ends the command quietly instead of crashing. */
export function guardStdout(): void {
  if (stdoutGuarded) return;
  stdoutGuarded = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    process.stderr.write(`cfs: stdout: ${err.message}\n`);
    process.exit(1);
  });
}

/** Write to stdout, waiting for the pipe to drain so big outputs do not pile up in memory. */
export async function writeStdout(data: string | Buffer): Promise<void> {
  guardStdout();
  if (!process.stdout.write(data)) await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
}

const FILE_TYPES: readonly FileType[] = ['reg', 'dir', 'lnk', 'chr', 'blk', 'fifo', 'sock'];

// ---------------------------------------------------------------------------------------------
// info

export interface SectionSummary {
  id: number;
  name: string;
  offset: number;
  size: number;
  count: number;
  crc: number;
}

export interface BlobInfo {
  file: string;
  version: string;
  blobSize: number;
  blockSize: number;
  headerSize: number;
  inlineThreshold: number;
  rootIno: number;
  inodes: number;
  dirents: number;
  /** Apparent size: sum of all regular files' sizes (each inode once). */
  dataBytes: number;
  types: Record<FileType, number>;
  emptyFiles: number;
  inlineFiles: number;
  inlineBytes: number;
  externalFiles: number;
  externalBytes: number;
  /** Distinct objects the blob needs and their total size (what the store holds for it). */
  objects: number;
  objectBytes: number;
  xattrSets: number;
  features: { compat: number; roCompat: number; incompat: number };
  sections: SectionSummary[];
  /** fs-verity SHA-256 digest of the blob file (what `cfs mount --digest` and `-o digest=` pin). */
  digest?: string;
}

/** Header fields plus counts by type and payload layout (reads every inode record once). */
export function blobInfo(reader: BlobReader, file = ''): BlobInfo {
  const h = reader.header;
  const types = Object.fromEntries(FILE_TYPES.map((t) => [t, 0])) as Record<FileType, number>;
  const info: BlobInfo = {
    file,
    version: `${h.versionMajor}.${h.versionMinor}`,
    blobSize: h.blobSize,
    blockSize: 2 ** h.blockSizeLog2,
    headerSize: h.headerSize,
    inlineThreshold: h.inlineThreshold,
    rootIno: h.rootIno,
    inodes: h.inodeCount,
    dirents: h.direntCount,
    dataBytes: h.dataBytes,
    types,
    emptyFiles: 0,
    inlineFiles: 0,
    inlineBytes: 0,
    externalFiles: 0,
    externalBytes: 0,
    objects: h.sections[SectionId.DIGESTS].count,
    objectBytes: 0,
    xattrSets: h.sections[SectionId.XATTR_INDEX].count,
    features: { compat: h.featureCompat, roCompat: h.featureRoCompat, incompat: h.featureIncompat },
    sections: h.sections.map((s, id) => ({ id, name: SECTION_NAMES[id], ...s })),
  };
  const objectSize = new Map<number, number>();
  for (let i = 0; i < h.inodeCount; i++) {
    const inode = reader.inode(i);
    types[inode.type]++;
    if (inode.type !== 'reg') continue;
    if (inode.layout === Layout.NONE) info.emptyFiles++;
    if (inode.layout === Layout.INLINE) {
      info.inlineFiles++;
      info.inlineBytes += inode.size;
    }
    if (inode.layout === Layout.EXTERNAL) {
      info.externalFiles++;
      info.externalBytes += inode.size;
      objectSize.set(inode.payload, inode.size);
    }
  }
  for (const size of objectSize.values()) info.objectBytes += size;
  return info;
}

const hex32 = (n: number) => '0x' + n.toString(16).padStart(8, '0');

export function formatInfo(info: BlobInfo): string {
  const typeCounts = FILE_TYPES.filter((t) => info.types[t] > 0).map((t) => `${t} ${info.types[t]}`).join(', ');
  const f = info.features;
  const rows: [string, string][] = [
    ['file', info.file],
    ...(info.digest ? [['fs-verity digest', info.digest] as [string, string]] : []),
    ['version', info.version],
    ['blob size', `${info.blobSize} bytes`],
    ['block size', `${info.blockSize}`],
    ['inline threshold', `${info.inlineThreshold}`],
    ['root inode', `${info.rootIno}`],
    ['inodes', `${info.inodes}${typeCounts ? ` (${typeCounts})` : ''}`],
    ['dirents', `${info.dirents}`],
    ['data bytes', `${info.dataBytes}`],
    ['empty files', `${info.emptyFiles}`],
    ['inline files', `${info.inlineFiles} (${info.inlineBytes} bytes)`],
    ['external files', `${info.externalFiles} (${info.externalBytes} bytes)`],
    ['objects', `${info.objects} (${info.objectBytes} bytes)`],
    ['xattr sets', `${info.xattrSets}`],
    ['features', `compat ${hex32(f.compat)}, ro_compat ${hex32(f.roCompat)}, incompat ${hex32(f.incompat)}` +
      (f.compat | f.roCompat | f.incompat ? '' : ' (none)')],
  ];
  const lines = rows.map(([k, v]) => `${(k + ':').padEnd(18)}${v}`);
  lines.push('sections:');
  const table = [['id', 'name', 'offset', 'size', 'count', 'crc32c'],
    ...info.sections.map((s) => [String(s.id), s.name, String(s.offset), String(s.size), String(s.count), hex32(s.crc)])];
  lines.push(...formatColumns(table, [false, false, true, true, true, false]).map((l) => '  ' + l));
  return lines.join('\n') + '\n';
}

/** Align columns: `right[k]` right-aligns column k; the last column is not padded. */
function formatColumns(rows: string[][], right: boolean[]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, k) => (widths[k] = Math.max(widths[k] ?? 0, [...c].length)));
  return rows.map((r) =>
    r.map((c, k) => {
      if (k === r.length - 1 && !right[k]) return c;
      const pad = ' '.repeat(widths[k] - [...c].length);
      return right[k] ? pad + c : c + pad;
    }).join(' '),
  );
}

// ---------------------------------------------------------------------------------------------
// ls

export interface LsEntry {
  /** Binary string: the entry name, or the path as given when listing a non-directory. */
  name: string;
  ino: number;
  inode: Inode;
  /** Symlinks: the target (binary string). */
  target?: string;
}

/** As the kernel follows symlinks (MAXSYMLINKS): more in one path is ELOOP. */
const MAX_SYMLINKS = 40;

/**
 * Inode of `path` inside the image, resolved as a path is inside a chroot of it: symlinks in
 * the middle are followed (an absolute target starts again at the image's root, `..` never
 * leaves it), the last one only when `followLast` or when the path ends with "/" (which also
 * asks for a directory, as POSIX says). Errors read as the kernel's.
 */
export function resolveInImage(reader: BlobReader, path: string, followLast: boolean): number {
  const shown = displayName(path);
  const root = reader.header.rootIno;
  const trailingSlash = path.endsWith('/') && path.replace(/\/+$/, '') !== '';
  const todo = path.split('/').filter((p) => p !== '' && p !== '.').reverse();
  let ino = root;
  let links = 0;
  while (todo.length > 0) {
    const part = todo.pop()!;
    const dir = reader.inode(ino);
    if (dir.type !== 'dir') throw new Error(`${shown}: not a directory`);
    if (part === '..') {
      ino = ino === root ? root : dir.aux;
      continue;
    }
    const next = reader.lookup(ino, part);
    if (next === undefined) throw new Error(`${shown}: no such file or directory`);
    const inode = reader.inode(next);
    if (inode.type === 'lnk' && (todo.length > 0 || followLast || trailingSlash)) {
      if (++links > MAX_SYMLINKS) throw new Error(`${shown}: too many levels of symbolic links`);
      const target = reader.readlink(next);
      if (target.startsWith('/')) ino = root;
      todo.push(...target.split('/').filter((p) => p !== '' && p !== '.').reverse());
      continue;
    }
    ino = next;
  }
  if (trailingSlash && reader.inode(ino).type !== 'dir') throw new Error(`${shown}: not a directory`);
  return ino;
}

/**
 * Like ls: a directory lists its entries (name order), anything else lists itself. Symlinks
 * on the way are followed inside the image; the last one is listed, not followed, unless the
 * path ends with "/".
 */
export function listPath(reader: BlobReader, path: string): LsEntry[] {
  const ino = resolveInImage(reader, path, false);
  const entry = (name: string, i: number): LsEntry => {
    const inode = reader.inode(i);
    return { name, ino: i, inode, target: inode.type === 'lnk' ? reader.readlink(i) : undefined };
  };
  const top = reader.inode(ino);
  if (top.type !== 'dir') return [entry(path, ino)];
  return [...reader.readdir(ino)].map((d) => entry(d.name, d.ino));
}

const TYPE_CHAR: Record<FileType, string> = { reg: '-', dir: 'd', lnk: 'l', chr: 'c', blk: 'b', fifo: 'p', sock: 's' };

/** `drwxr-sr-t` style mode string, with s/S and t/T as ls prints them. */
export function modeString(mode: number, type: FileType): string {
  const rwx = (bits: number, special: boolean, ch: string) =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') +
    (special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-');
  return TYPE_CHAR[type] +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't');
}

/** mtime as `YYYY-MM-DD HH:MM:SS` in UTC (stable whatever the host's zone). */
export function formatMtime(sec: number): string {
  const d = new Date(sec * 1000);
  if (Number.isNaN(d.getTime())) return `@${sec}`;
  return d.toISOString().slice(0, 19).replace('T', ' ');
}

export function formatLs(entries: LsEntry[], long: boolean): string {
  if (entries.length === 0) return '';
  if (!long) return entries.map((e) => displayName(e.name) + '\n').join('');
  const rows = entries.map((e) => {
    const i = e.inode;
    const size = i.type === 'chr' || i.type === 'blk' ? `${i.rdevMajor}, ${i.rdevMinor}` : String(i.size);
    const name = displayName(e.name) + (e.target !== undefined ? ` -> ${displayName(e.target)}` : '');
    return [modeString(i.mode, i.type), String(i.nlink), String(i.uid), String(i.gid), size, formatMtime(i.mtimeSec), name];
  });
  return formatColumns(rows, [false, true, true, true, true, false, false]).map((l) => l + '\n').join('');
}

// ---------------------------------------------------------------------------------------------
// cat

export type FileContent =
  | { kind: 'bytes'; data: Buffer }
  | { kind: 'object'; path: string; size: number };

/**
 * Where the content of the regular file at `path` comes from: the blob (inline, empty) or the
 * first store holding its object. Symlinks are followed as in a chroot of the image (never out
 * of it); anything but a regular file is an error.
 */
export function locateContent(reader: BlobReader, path: string, stores: string[]): FileContent {
  const shown = displayName(path);
  const ino = resolveInImage(reader, path, true);
  const inode = reader.inode(ino);
  if (inode.type === 'dir') throw new Error(`${shown}: is a directory`);
  if (inode.type !== 'reg') throw new Error(`${shown}: not a regular file`);
  if (inode.layout === Layout.NONE) return { kind: 'bytes', data: Buffer.alloc(0) };
  if (inode.layout === Layout.INLINE) return { kind: 'bytes', data: reader.readInline(ino) };
  const digest = reader.digest(inode.payload);
  if (stores.length === 0) throw new Error(`${shown}: content is in object ${digest.toString('hex')}; give --store DIR`);
  const objectPath = findObject(stores, digest);
  if (objectPath === null) throw new Error(`${shown}: object ${digest.toString('hex')} not found in any store`);
  return { kind: 'object', path: objectPath, size: inode.size };
}

/** Open an object for reading without following a symlink; checks it has the expected size. */
export async function openObject(objectPath: string, size: number): Promise<fs.promises.FileHandle> {
  const fh = await fs.promises.open(objectPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(`${objectPath}: not a regular file`);
    if (st.size !== size) throw new Error(`${objectPath}: object has ${st.size} bytes, the blob says ${size}`);
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** The whole content of a regular file in the blob (for tests and small files). */
export async function readBlobFile(blobPath: string, path: string, stores: string[]): Promise<Buffer> {
  const where = await withBlob(blobPath, (r) => locateContent(r, binaryOfArg(path), stores));
  if (where.kind === 'bytes') return where.data;
  const fh = await openObject(where.path, where.size);
  try {
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** Stream a regular file's content to stdout. */
async function catToStdout(blobPath: string, path: string, stores: string[]): Promise<void> {
  const where = await withBlob(blobPath, (r) => locateContent(r, binaryOfArg(path), stores));
  if (where.kind === 'bytes') return writeStdout(where.data);
  const fh = await openObject(where.path, where.size);
  try {
    const buf = Buffer.alloc(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      // write() may keep the buffer until it is flushed, so hand it a copy.
      await writeStdout(Buffer.from(buf.subarray(0, bytesRead)));
    }
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// dump

/** SPEC §9 text dump of a blob file. */
export function dumpText(blobPath: string): Promise<string> {
  return withBlob(blobPath, (r) => dumpBlob(r));
}

/**
 * JSON lines: a header object, then one object per dirent in the text dump's order (the root
 * first). Keys always in the same order; paths, symlink targets and xattr names escaped as in
 * the text dump (SPEC §9), byte values in lowercase hex, so the output is ASCII and stable.
 */
export function* dumpJsonLines(reader: BlobReader): Generator<string> {
  const h = reader.header;
  yield JSON.stringify({
    unionblob: h.versionMajor, inodes: h.inodeCount, dirents: h.direntCount,
    digests: h.sections[SectionId.DIGESTS].count, xattrsets: h.sections[SectionId.XATTR_INDEX].count,
  });
  for (const { path, ino, inode } of reader.walk()) {
    const entry: Record<string, unknown> = {
      path: escapeBytes(path), ino: ino + 1, type: inode.type, mode: inode.mode & 0o7777,
      uid: inode.uid, gid: inode.gid, nlink: inode.nlink, size: inode.size,
      mtime_sec: inode.mtimeSec, mtime_nsec: inode.mtimeNsec,
    };
    switch (inode.type) {
      case 'reg':
        if (inode.layout === Layout.INLINE) entry.inline = reader.readInline(ino).toString('hex');
        if (inode.layout === Layout.EXTERNAL) entry.object = reader.digest(inode.payload).toString('hex');
        break;
      case 'dir':
        entry.dirBytes = inode.payloadLen;
        break;
      case 'lnk':
        entry.target = escapeBytes(reader.readlink(ino));
        break;
      case 'chr':
      case 'blk':
        entry.major = inode.rdevMajor;
        entry.minor = inode.rdevMinor;
        break;
    }
    const xattrs: Record<string, string> = {};
    for (const [name, value] of reader.xattrs(ino)) xattrs[escapeBytes(name)] = value.toString('hex');
    entry.xattrs = xattrs;
    yield JSON.stringify(entry);
  }
}

export function dumpJson(blobPath: string): Promise<string> {
  return withBlob(blobPath, (r) => [...dumpJsonLines(r)].map((l) => l + '\n').join(''));
}

// ---------------------------------------------------------------------------------------------
// CLI

export function registerInspect(program: Command): void {
  program
    .command('info')
    .description('print the header, counts, sizes, features and section table of a blob')
    .argument('<blob>')
    .option('--json', 'print one JSON object')
    .action(async (blob: string, o: { json?: boolean }) => {
      const info = await withBlob(blob, (r) => blobInfo(r, blob));
      info.digest = (await hashFile(blob)).toString('hex');
      await writeStdout(o.json ? JSON.stringify(info) + '\n' : formatInfo(info));
    });

  program
    .command('ls')
    .description('list a directory of a blob (or one entry), like ls')
    .argument('<blob>')
    .argument('[path]', 'path inside the image', '/')
    .option('-l, --long', 'mode, nlink, uid, gid, size (major, minor for devices), mtime (UTC), name -> target')
    .action(async (blob: string, path: string, o: { long?: boolean }) => {
      const text = await withBlob(blob, (r) => formatLs(listPath(r, binaryOfArg(path)), !!o.long));
      await writeStdout(text);
    });

  program
    .command('cat')
    .description('print the content of a regular file (inline, or its object from the first store that has it)')
    .argument('<blob>')
    .argument('<path>', 'path inside the image (symlinks followed as in a chroot of it)')
    .option('--store <dir>', 'object store (repeatable; searched in order)', collectStores, [])
    .action(async (blob: string, path: string, o: { store: string[] }) => {
      checkStoresExist(o.store);
      await catToStdout(blob, path, o.store);
    });

  program
    .command('dump')
    .description('print the stable text dump (format/SPEC.md section 9), or JSON lines with --json')
    .argument('<blob>')
    .option('--json', 'one JSON object per line: a header, then one per dirent')
    .action(async (blob: string, o: { json?: boolean }) => {
      if (!o.json) return writeStdout(await dumpText(blob));
      await withBlob(blob, async (r) => {
        // Stream line batches so a huge blob's dump does not have to fit in one string.
        let batch: string[] = [];
        for (const line of dumpJsonLines(r)) {
          batch.push(line);
          if (batch.length >= 1024) {
            await writeStdout(batch.join('\n') + '\n');
            batch = [];
          }
        }
        if (batch.length > 0) await writeStdout(batch.join('\n') + '\n');
      });
    });
}
