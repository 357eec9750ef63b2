// Constants of the on-disk format (format/SPEC.md, version 2): sizes, section ids, field
// offsets of every fixed-size record, the xattr prefix table and the Linux DT_* values.
// Offsets are named after the C fields in format/unionblob_fs.h so both sides read alike.

import { S_IFMT, S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK, S_IFDIR, S_IFCHR, S_IFIFO, type FileType } from './tree.js';

/** "UNIONBLB" */
export const MAGIC = Buffer.from('UNIONBLB', 'latin1');
export const VERSION_MAJOR = 2;
export const VERSION_MINOR = 0;

export const BLOCK_SIZE_LOG2 = 12;
/** Page size the blob is read in, largest directory chunk, section alignment. */
export const BLOCK_SIZE = 1 << BLOCK_SIZE_LOG2;

export const HEADER_SIZE = 512;
export const SECTION_TABLE_OFFSET = 128;
export const SECTION_ENTRY_SIZE = 32;
/** Slots in the section table; v2 uses the first SECTION_COUNT, the rest must be zero. */
export const SECTION_SLOTS = 12;
export const SECTION_COUNT = 6;

export const SectionId = {
  INODES: 0,
  DIRS: 1,
  DATA: 2,
  DIGESTS: 3,
  XATTR_INDEX: 4,
  XATTR_DATA: 5,
} as const;
export const SECTION_NAMES = ['INODES', 'DIRS', 'DATA', 'DIGESTS', 'XATTR_INDEX', 'XATTR_DATA'] as const;

/** struct ub_super field offsets. */
export const HDR = {
  magic: 0,
  headerCrc: 8,
  versionMajor: 12,
  versionMinor: 14,
  headerSize: 16,
  blockSizeLog2: 20,
  featureCompat: 24,
  featureRoCompat: 28,
  featureIncompat: 32,
  inlineThreshold: 36,
  blobSize: 40,
  rootIno: 48,
  inodeCount: 56,
  direntCount: 64,
  dataBytes: 72,
  reserved: 80,
  sections: SECTION_TABLE_OFFSET,
} as const;

/** struct ub_section field offsets. */
export const SEC = { offset: 0, size: 8, count: 16, crc: 24, reserved: 28 } as const;

/** Feature bits known to this implementation (none in v2). */
export const KNOWN_INCOMPAT = 0;

export const INODE_SIZE = 48;
/** Inodes per 4096-byte page of INODES; the 16 bytes after the last one are zero (SPEC §4). */
export const INODES_PER_PAGE = Math.floor(BLOCK_SIZE / INODE_SIZE);
/** struct ub_inode field offsets. */
export const INO = {
  mode: 0,
  layout: 2,
  reserved: 3,
  nlink: 4,
  uid: 8,
  gid: 12,
  size: 16,
  mtime: 24,
  xattrSet: 32,
  aux: 36,
  payload: 40,
} as const;

/** Byte offset of inode `i` inside INODES: whole pages of 85, an inode never crosses a page. */
export function inodeOffset(i: number): number {
  const page = Math.floor(i / INODES_PER_PAGE);
  return page * BLOCK_SIZE + (i - page * INODES_PER_PAGE) * INODE_SIZE;
}

/** INODES section size for `count` inodes: full pages, then the last page's inodes. */
export function inodesSectionSize(count: number): number {
  return count === 0 ? 0 : inodeOffset(count - 1) + INODE_SIZE;
}

// ub_inode.mtime (SPEC §4): signed 34-bit seconds in the low bits, nanoseconds above them.
export const MTIME_SEC_BITS = 34;
export const MIN_MTIME_SEC = -(2 ** 33);
export const MAX_MTIME_SEC = 2 ** 33 - 1;

export const Layout = { NONE: 0, INLINE: 1, EXTERNAL: 2, DIR: 3 } as const;
export type LayoutValue = (typeof Layout)[keyof typeof Layout];

export const DIRENT_SIZE = 8;
/** struct ub_dirent field offsets. */
export const DIRENT = { ino: 0, nameoff: 4, fileType: 6, reserved: 7 } as const;

/**
 * Directories (SPEC §5): a directory's data is `size` bytes at byte offset `payload` of
 * DIRS, split into chunks of DIR_CHUNK_SIZE bytes (the last one shorter); chunk `c` is
 * [c * 4096, min((c + 1) * 4096, size)). A chunk holds at least one dirent and one name byte.
 */
export const DIR_CHUNK_SIZE = BLOCK_SIZE;
export const MIN_DIR_CHUNK_LEN = DIRENT_SIZE + 1;

/** Number of chunks of a directory of `dirBytes` bytes. */
export function dirChunkCount(dirBytes: number): number {
  return Math.ceil(dirBytes / DIR_CHUNK_SIZE);
}

/** Byte length of chunk `c` of a directory of `dirBytes` bytes (c < dirChunkCount). */
export function dirChunkLen(dirBytes: number, c: number): number {
  return Math.min(DIR_CHUNK_SIZE, dirBytes - c * DIR_CHUNK_SIZE);
}

/** Readdir position of entry k of chunk c: 2 + c * 4096 + k * 8 (0 and 1 are "." and ".."). */
export function dirPos(c: number, k: number): number {
  return 2 + c * DIR_CHUNK_SIZE + k * DIRENT_SIZE;
}

export const DIGEST_SIZE = 32;

export const XATTR_SET_SIZE = 16;
/** struct ub_xattr_set field offsets. */
export const XSET = { offset: 0, size: 8, count: 12, reserved: 14 } as const;

/** Header of one xattr entry in XATTR_DATA (suffix and value follow). */
export const XATTR_ENTRY_HEADER_SIZE = 8;
export const XENT = { prefix: 0, suffixLen: 1, reserved: 2, valueLen: 4 } as const;

/** Prefix table of SPEC §8, indexed by prefix id. */
export const XATTR_PREFIXES: readonly string[] = [
  '',
  'user.',
  'trusted.',
  'security.',
  'system.posix_acl_access',
  'system.posix_acl_default',
];

// Limits (SPEC §4, §5, §8).
/** A directory's DIRS bytes (its size) are kept below 4 GiB, so readers may hold them in 32 bits. */
export const MAX_DIR_BYTES = 0xffffffff;
export const MAX_NAME_LEN = 255;
export const MAX_SYMLINK_LEN = 4095;
export const MAX_INLINE_SIZE = BLOCK_SIZE;
export const DEFAULT_INLINE_THRESHOLD = 64;
export const MAX_XATTR_NAME_LEN = 255;
/**
 * Mounts show an image's trusted.overlay.X as trusted.overlay.overlay.X (SPEC §8, overlayfs's
 * escaping): such a stored name may be at most 255 - 8 bytes, or the shown one cannot be fetched.
 */
export const XATTR_OVERLAY_PREFIX = 'trusted.overlay.';
export const XATTR_OVERLAY_ESCAPED = 'trusted.overlay.overlay.';
export const MAX_XATTR_OVERLAY_NAME_LEN = MAX_XATTR_NAME_LEN - (XATTR_OVERLAY_ESCAPED.length - XATTR_OVERLAY_PREFIX.length);
export const MAX_XATTR_VALUE_LEN = 65536;
export const MAX_XATTR_SET_ENTRIES = 65535;
export const MAX_NSEC = 999_999_999;
/** Device numbers as Linux's new_encode_dev can hold them (12-bit major, 20-bit minor). */
export const MAX_DEV_MAJOR = 0xfff;
export const MAX_DEV_MINOR = 0xfffff;
/** Dirent ino, inode aux and xattr_set are 32-bit. */
export const MAX_INODES = 0xffffffff;

/** Linux DT_* values stored in ub_dirent.file_type. */
export const DT = { FIFO: 1, CHR: 2, DIR: 4, BLK: 6, REG: 8, LNK: 10, SOCK: 12 } as const;

const dtypeByFormat = new Map<number, number>([
  [S_IFIFO, DT.FIFO], [S_IFCHR, DT.CHR], [S_IFDIR, DT.DIR], [S_IFBLK, DT.BLK],
  [S_IFREG, DT.REG], [S_IFLNK, DT.LNK], [S_IFSOCK, DT.SOCK],
]);

/** DT_* of a mode's file type, or 0 when the type bits are not one of the seven. */
export function dtypeOfMode(mode: number): number {
  return dtypeByFormat.get(mode & S_IFMT) ?? 0;
}

const fileTypeByDtype: Record<number, FileType> = {
  [DT.FIFO]: 'fifo', [DT.CHR]: 'chr', [DT.DIR]: 'dir', [DT.BLK]: 'blk',
  [DT.REG]: 'reg', [DT.LNK]: 'lnk', [DT.SOCK]: 'sock',
};

/** File type named by a DT_* value, undefined for anything else. */
export function fileTypeOfDtype(dtype: number): FileType | undefined {
  return fileTypeByDtype[dtype];
}

/** Linux new_encode_dev. */
export function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** Linux new_decode_dev. */
export function decodeDev(dev: number): { major: number; minor: number } {
  return { major: (dev & 0xfff00) >>> 8, minor: ((dev & 0xff) | ((dev >>> 12) & 0xfff00)) >>> 0 };
}

export function roundUpToBlock(n: number): number {
  return Math.ceil(n / BLOCK_SIZE) * BLOCK_SIZE;
}
