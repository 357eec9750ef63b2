// The in-memory merged tree: what the compiler builds from image layers and what the encoder
// turns into a blob (and the decoder can rebuild). Names and other byte strings that are not
// text are kept as "binary strings" (latin1: one char per byte), so JavaScript's string
// comparison is exactly the memcmp order the format sorts by, and no byte is lost to UTF-8.

export type FileType = 'reg' | 'dir' | 'lnk' | 'chr' | 'blk' | 'fifo' | 'sock';

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export interface TreeNode {
  /** Full st_mode: file type bits and permission bits (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Signed seconds since the epoch. */
  mtimeSec: number;
  /** 0..999999999 */
  mtimeNsec: number;
  /** xattr name (binary string) -> value. */
  xattrs: Map<string, Buffer>;
  /** Regular file: content size in bytes. Symlink: target length. Others: 0. */
  size: number;
  /** Regular file at or below the inline threshold (1..threshold bytes). */
  inline?: Buffer;
  /** Regular file stored in the object store: fs-verity SHA-256 digest (32 bytes). */
  digest?: Buffer;
  /** Symlink target (binary string, 1..4095 bytes). */
  target?: string;
  /** Character and block devices. */
  rdevMajor?: number;
  rdevMinor?: number;
  /** Directories: name (binary string) -> child. Hardlinks are one TreeNode under several names. */
  children?: Map<string, TreeNode>;
}

export function fileTypeOf(mode: number): FileType {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'reg';
    case S_IFDIR: return 'dir';
    case S_IFLNK: return 'lnk';
    case S_IFCHR: return 'chr';
    case S_IFBLK: return 'blk';
    case S_IFIFO: return 'fifo';
    case S_IFSOCK: return 'sock';
    default: throw new Error(`unknown file type in mode 0${mode.toString(8)}`);
  }
}

export function newDir(mode = 0o755, uid = 0, gid = 0): TreeNode {
  return { mode: S_IFDIR | (mode & 0o7777), uid, gid, mtimeSec: 0, mtimeNsec: 0, xattrs: new Map(), size: 0, children: new Map() };
}
