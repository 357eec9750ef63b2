// The unionblob Node-API addon (mounter/addon/, `npm run build:addon`): the new mount API and
// the fs-verity ioctls, which Node itself cannot reach. This module loads it lazily, so code
// that only may need it (cfs mount's kernel backend, cfs build --verity) still runs where it
// was not built, and gives it types.
//
// Errors thrown by the addon are shaped like node:fs errors: `code` ('EINVAL'), `errno`
// (negative), `syscall`, `path` where a file is concerned, plus `kernelMessages`: the lines the
// filesystem logged into the mount context ("e tmpfs: Bad value for 'size'"), which the
// message also carries.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** One mount option: [key] is a flag (FSCONFIG_SET_FLAG), [key, value] a string. */
export type MountOption = readonly [key: string, value?: string];

export interface FsMountSpec {
  fstype: string;
  /** "source" (device, image file, or a name for /proc/mounts). */
  source?: string;
  options?: readonly MountOption[];
  /** MOUNT_ATTR_* bits for the new mount (see MOUNT_ATTR, mountAttrFromFlags). */
  flags?: number;
}

export interface FsMountResult {
  /** What the filesystem logged although the mount succeeded (warnings, notes). */
  messages: string[];
}

/** An Error from the addon: a failed system call. */
export interface KernelError extends Error {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
  kernelMessages: string[];
}

interface Native {
  fsMount(spec: FsMountSpec & { target?: string }): { fd?: number; messages: string[] };
  moveMount(fd: number, target: string): void;
  /** Absent from builds that predate it. */
  idmapBind?(source: string, target: string, usernsFd: number): void;
  fsverityEnable(path: string): boolean;
  fsverityMeasure(path: string): Buffer | null;
  writeObjectFile(dir: string | number, name: string, data: Uint8Array, mode: number, chmod: boolean): boolean;
  /** Absent from builds that predate them. */
  verityDigest?(data: Uint8Array, out: Uint8Array): void;
  verityBlockHashes?(data: Uint8Array, out: Uint8Array): number;
  setTimes?(path: string | Buffer, sec: number, nsec: number): void;
  nextDataExtent?(fd: number, offset: number): [number, number] | null;
  /** Only where the CPU has SSE4.2's crc32 instruction. */
  crc32c?(data: Uint8Array, previous: number): number;
  /** Absent from builds that predate them; decompressOpen() is null in builds without the codec's library. */
  decompressOpen?(codec: DecompressCodec): DecompressState | null;
  decompressStep?(state: DecompressState, input: Uint8Array, output: Uint8Array): Promise<[number, number, DecompressStatus]>;
}

/** The layer compressions the addon decompresses: gzip with ISA-L, zstd with libzstd. */
export type DecompressCodec = 'gzip' | 'zstd';

/** A decompression stream's state inside the addon (gunzip.cc, unzstd.cc), opaque here. */
export type DecompressState = { readonly __decompress: unique symbol };

/** decompress.h's DecompressStatus: why a step stopped. */
export const DECOMPRESS_STATUS = {
  /** The output is full; call again with the input left. */
  OUTPUT_FULL: 0,
  /** The input is used up at the end of a member (gzip) or frame (zstd): the stream may end here. */
  NEED_INPUT: 1,
  /** The input is used up inside a member or frame: more must come. */
  NEED_MORE: 2,
  /** gzip: zero bytes after a member, padding; the rest of the input is ignored. */
  END: 3,
} as const;
export type DecompressStatus = (typeof DECOMPRESS_STATUS)[keyof typeof DECOMPRESS_STATUS];

/** One codec's streaming decompression in the addon, a step at a time on libuv's threadpool. */
export interface NativeDecompressor {
  open(): DecompressState;
  /** Resolves to [input bytes read, output bytes written, status]; rejects with the codec's words for corrupt data. */
  step(state: DecompressState, input: Uint8Array, output: Uint8Array): Promise<[number, number, DecompressStatus]>;
}

/** The addon is not built (as opposed to built and failing to load). */
export class AddonMissingError extends Error {
  override name = 'AddonMissingError';
}

/** linux/mount.h: attributes of a mount (fsmount's attr_flags). Kernel ABI. */
export const MOUNT_ATTR = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  NOATIME: 0x10,
  STRICTATIME: 0x20,
  NODIRATIME: 0x80,
  NOSYMFOLLOW: 0x200000,
} as const;

// ---------------------------------------------------------------------------------------------
// Loading

/** build/Release of mounter/addon, from dist/mounter/addon.js; UNIONBLOB_ADDON overrides it. */
export function addonPath(): string {
  if (process.env.UNIONBLOB_ADDON) return process.env.UNIONBLOB_ADDON;
  return fileURLToPath(new URL('../../mounter/addon/build/Release/unionblob.node', import.meta.url));
}

let native: Native | undefined;

/** The native module; throws AddonMissingError when it is not built. */
export function loadAddon(): Native {
  if (native) return native;
  const file = addonPath();
  if (!existsSync(file)) {
    throw new AddonMissingError(`the unionblob Node-API addon is not built (no ${file}): run npm run build:addon`);
  }
  try {
    native = createRequire(import.meta.url)(file) as Native;
  } catch (err) {
    throw new Error(`cannot load the unionblob Node-API addon ${file}: ${(err as Error).message} (rebuild it: npm run build:addon)`);
  }
  return native;
}

/** Whether the addon is built; a built addon that fails to load still throws from loadAddon(). */
export function addonBuilt(): boolean {
  return existsSync(addonPath());
}

// ---------------------------------------------------------------------------------------------
// Holes

/** Whether the addon can list a file's runs of data (see dataExtents). */
export function canSeekData(): boolean {
  try {
    return addonBuilt() && loadAddon().nextDataExtent !== undefined;
  } catch {
    return false;
  }
}

/**
 * The runs of data [start, end) of open file `fd`, in order (lseek SEEK_DATA / SEEK_HOLE): what
 * is between them is a hole. Ask canSeekData() first.
 */
export function* dataExtents(fd: number): Generator<[number, number]> {
  const next = loadAddon().nextDataExtent!;
  for (let at = 0; ; ) {
    const x = next(fd, at);
    if (x === null) return;
    yield x;
    at = x[1];
  }
}

// ---------------------------------------------------------------------------------------------
// Mounting

/**
 * Mounts through fsopen/fsconfig/fsmount/move_mount on `target`. A failure names the step and
 * option that failed, with errno and the filesystem's own message.
 */
export function fsMount(spec: FsMountSpec & { target: string }): FsMountResult {
  return { messages: loadAddon().fsMount(spec).messages };
}

/** The same, but the mount stays detached: attach it with moveMount(), release it with closeSync(). */
export function fsMountDetached(spec: FsMountSpec): FsMountResult & { fd: number } {
  const r = loadAddon().fsMount({ ...spec, target: undefined });
  return { fd: r.fd!, messages: r.messages };
}

/** Attaches a detached mount at `target` (the fd stays open: close it after). */
export function moveMount(fd: number, target: string): void {
  loadAddon().moveMount(fd, target);
}

/**
 * An idmapped bind of the mount at `source` on `target`, through the user namespace open at
 * `usernsFd` (see mounter/userns.ts): open_tree(CLONE), mount_setattr(MOUNT_ATTR_IDMAP), move_mount.
 */
export function idmapBind(source: string, target: string, usernsFd: number): void {
  const addon = loadAddon();
  if (!addon.idmapBind) throw new AddonMissingError('the Node-API addon predates idmapped mounts: npm run build:addon');
  addon.idmapBind(source, target, usernsFd);
}

/**
 * mount(8)'s generic flags in the new API's terms: most are attributes of the mount; sync,
 * async and dirsync are superblock flags (fsconfig). The atime family follows mount(2), where
 * relatime is the default that atime, norelatime and nostrictatime fall back to. Of a flag and
 * its opposite (nosuid and suid, ...), and of the atime family (one field of the attributes),
 * the last one given wins, as with mount(8).
 */
export function mountAttrFromFlags(flags: readonly string[]): { attr: number; sbFlags: string[] } {
  const bits: Record<string, number> = {
    ro: MOUNT_ATTR.RDONLY, nosuid: MOUNT_ATTR.NOSUID, nodev: MOUNT_ATTR.NODEV, noexec: MOUNT_ATTR.NOEXEC,
    nodiratime: MOUNT_ATTR.NODIRATIME, nosymfollow: MOUNT_ATTR.NOSYMFOLLOW,
  };
  // MOUNT_ATTR__ATIME is one field: relatime (0), noatime or strictatime
  const atimes: Record<string, number> = {
    noatime: MOUNT_ATTR.NOATIME, strictatime: MOUNT_ATTR.STRICTATIME,
    atime: 0, relatime: 0, norelatime: 0, nostrictatime: 0,
  };
  let atime = 0;
  const opposite: Record<string, number> = {
    rw: MOUNT_ATTR.RDONLY, suid: MOUNT_ATTR.NOSUID, dev: MOUNT_ATTR.NODEV, exec: MOUNT_ATTR.NOEXEC,
    diratime: MOUNT_ATTR.NODIRATIME, symfollow: MOUNT_ATTR.NOSYMFOLLOW,
  };
  let attr = 0;
  const sbFlags: string[] = [];
  for (const f of flags) {
    if (f in bits) attr |= bits[f];
    else if (f in opposite) attr &= ~opposite[f];
    else if (f in atimes) atime = atimes[f];
    else if (f === 'sync' || f === 'async' || f === 'dirsync') sbFlags.push(f);
    else throw new Error(`unknown mount flag ${f}`);
  }
  return { attr: attr | atime, sbFlags };
}

// ---------------------------------------------------------------------------------------------
// fs-verity

/**
 * Enables fs-verity on a file (SHA-256, 4096-byte blocks, no salt: the digest objects are named
 * by). Returns true if enabled now, false if the file already had it. Throws a KernelError;
 * isVerityUnsupported() tells "no fs-verity on this filesystem" from real failures.
 */
export function fsverityEnable(path: string): boolean {
  return loadAddon().fsverityEnable(path);
}

/** The file's fs-verity digest, or null when it has none (or its filesystem has no fs-verity). */
export function fsverityMeasure(path: string): Buffer | null {
  return loadAddon().fsverityMeasure(path);
}

/**
 * ENOTTY: the filesystem has no fs-verity; EOPNOTSUPP: not enabled on this one (mkfs -O verity),
 * or the kernel has no CONFIG_FS_VERITY.
 */
export function isVerityUnsupported(err: unknown): boolean {
  const code = (err as KernelError | undefined)?.code;
  return code === 'ENOTTY' || code === 'EOPNOTSUPP';
}

// ---------------------------------------------------------------------------------------------
// Store objects

/**
 * Creates DIR/NAME with `data` as an unnamed file (O_TMPFILE) linked in once complete, so a
 * killed process never leaves a partial file under the name. Returns true if created, false if
 * the name existed (left untouched). Throws a KernelError; isTmpfileUnsupported() tells
 * "this filesystem cannot make unnamed files" (use a temp name and rename) from real failures.
 * `dir` may be a descriptor of the directory (opened O_RDONLY | O_DIRECTORY): no path walk per
 * object. Linked with AT_EMPTY_PATH where the process may (CAP_DAC_READ_SEARCH), else through
 * /proc/self/fd.
 */
export function writeObjectFile(dir: string | number, name: string, data: Uint8Array, mode: number, chmod: boolean): boolean {
  return loadAddon().writeObjectFile(dir, name, data, mode, chmod);
}

/**
 * The addon's fs-verity digest of an in-memory content (verityhash.cc: node's OpenSSL, about
 * twice node:crypto's speed per 4 KiB block), writing 32 bytes into `out`; null where the addon
 * is not built, does not load or predates it, or UNIONBLOB_HASHER=js asks for node:crypto
 * (compiler/store.ts then hashes in JavaScript; the tests compare the two).
 */
export function nativeVerityDigest(): ((data: Uint8Array, out: Uint8Array) => void) | null {
  return process.env.UNIONBLOB_HASHER === 'js' ? null : optionalFunction('verityDigest');
}

/**
 * The addon's SHA-256 of each whole 4 KiB block of a buffer (32 bytes per block into `out`; it
 * returns the count): the first Merkle level of format/verity.ts's streaming VerityHasher,
 * which otherwise makes one node:crypto call per block. Null where nativeVerityDigest() is.
 */
export function nativeBlockHasher(): ((data: Uint8Array, out: Uint8Array) => number) | null {
  return process.env.UNIONBLOB_HASHER === 'js' ? null : optionalFunction('verityBlockHashes');
}

/**
 * The addon's decompression of a codec, off the main thread: gzip with ISA-L's igzip (gunzip.cc,
 * 2.5-3x the speed of node's zlib on container layers), zstd with libzstd (unzstd.cc; zstd-napi
 * decompresses on the main thread). Null where the addon is not built, does not load, predates
 * it or was built without the codec's library (libisal-dev, libzstd-dev), or
 * UNIONBLOB_DECOMPRESS=js asks for node's zlib and zstd-napi (the tests compare the two).
 */
export function nativeDecompressor(codec: DecompressCodec): NativeDecompressor | null {
  if (process.env.UNIONBLOB_DECOMPRESS === 'js') return null;
  if (!decompressors.has(codec)) decompressors.set(codec, findDecompressor(codec));
  return decompressors.get(codec)!;
}

const decompressors = new Map<DecompressCodec, NativeDecompressor | null>();

function findDecompressor(codec: DecompressCodec): NativeDecompressor | null {
  const open = optionalFunction('decompressOpen');
  const step = optionalFunction('decompressStep');
  if (!open || !step) return null;
  try {
    if (open(codec) === null) return null;
  } catch {
    return null;
  }
  return { open: () => open(codec)!, step };
}

/** An optional function of the addon, or null where it is not built, does not load or lacks it. */
function optionalFunction<K extends 'verityDigest' | 'verityBlockHashes' | 'crc32c' | 'setTimes' | 'decompressOpen' | 'decompressStep'>(name: K): NonNullable<Native[K]> | null {
  if (!addonBuilt()) return null;
  try {
    const fn = loadAddon()[name];
    return typeof fn === 'function' ? (fn as NonNullable<Native[K]>) : null;
  } catch {
    return null;
  }
}

/**
 * The addon's CRC-32C (the CPU's crc32 instruction, several times format/crc32c.ts's speed: the
 * checksums of every blob written or checked), or null where the addon is not built, does not
 * load, predates it or the CPU lacks the instruction, or UNIONBLOB_CRC=js asks for the tables.
 */
export function nativeCrc32c(): ((data: Uint8Array, previous: number) => number) | null {
  return process.env.UNIONBLOB_CRC === 'js' ? null : optionalFunction('crc32c');
}

/**
 * The addon's utimensat(AT_SYMLINK_NOFOLLOW) of atime and mtime to sec.nsec (a symlink's own
 * times), or null where the addon is not built, does not load or predates it: Node's lutimes
 * keeps microseconds only. Throws a KernelError (code, path) when the call fails.
 */
export function nativeSetTimes(): ((path: string | Buffer, sec: number, nsec: number) => void) | null {
  return optionalFunction('setTimes');
}

/**
 * open(O_TMPFILE) refused: EOPNOTSUPP (the filesystem has no unnamed files), EISDIR (a kernel
 * older than O_TMPFILE, which sees only O_DIRECTORY), EINVAL (flags it does not know); or no
 * /proc to link the file from (ENOENT from linkat of /proc/self/fd/N).
 */
export function isTmpfileUnsupported(err: unknown): boolean {
  const e = err as KernelError | undefined;
  if (e?.syscall === 'open') return e.code === 'EOPNOTSUPP' || e.code === 'EISDIR' || e.code === 'EINVAL';
  return e?.syscall === 'linkat' && e.code === 'ENOENT' && !existsSync('/proc/self/fd');
}
