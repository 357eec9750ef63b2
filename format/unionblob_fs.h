/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only */
/*
 * unionblob on-disk format, version 2.
 *
 * This header is the C declaration of format/SPEC.md; the SPEC is the
 * contract and every struct below is checked against its offsets at compile
 * time.  It is shared by the kernel module (kmod/), the FUSE server, the
 * reader library (format/c/ubreader.c), ubdump and the fuzzers, so it only
 * declares layout and constants: no functions, no libc.
 *
 * All integers are little-endian.  Every struct is naturally aligned with
 * explicit reserved fields, so no packing attribute is needed and the
 * compiler cannot insert padding (the assertions at the end prove it).
 */
#ifndef __UNIONBLOB_FS_H
#define __UNIONBLOB_FS_H

#if defined(__KERNEL__) || defined(__linux__)
#include <linux/types.h>	/* __u8, __le16, __le32, __le64 (kernel and uapi) */
#else
#include <stdint.h>
typedef uint8_t  __u8;
typedef uint16_t __le16;
typedef uint32_t __le32;
typedef uint64_t __le64;
#endif

/* ---- blob geometry (SPEC §1, §2) --------------------------------------- */

#define UB_BLOCK_SIZE_LOG2	12
#define UB_BLOCK_SIZE		(1u << UB_BLOCK_SIZE_LOG2)	/* page, dir chunk, section alignment */

#define UB_MAGIC		"UNIONBLB"	/* 55 4E 49 4F 4E 42 4C 42 */
#define UB_MAGIC_LEN		8
#define UB_VERSION_MAJOR	2
#define UB_VERSION_MINOR	0
#define UB_HEADER_SIZE		512

/*
 * Feature words, ext4 style.  v2 defines no bits; these masks are what this
 * reader knows.  Unknown compat and ro_compat bits are ignored (every reader
 * of this project is read-only); an unknown incompat bit refuses the blob.
 */
#define UB_FEATURE_COMPAT_SUPP		0u
#define UB_FEATURE_RO_COMPAT_SUPP	0u
#define UB_FEATURE_INCOMPAT_SUPP	0u

/* ---- section table (SPEC §3) ------------------------------------------- */

enum {
	UB_SECT_INODES		= 0,	/* struct ub_inode[count] */
	UB_SECT_DIRS		= 1,	/* directory data, bytes; count = non-empty dirs */
	UB_SECT_DATA		= 2,	/* inline data / symlink targets; count = items */
	UB_SECT_DIGESTS		= 3,	/* u8[32][count], sorted, unique */
	UB_SECT_XATTR_INDEX	= 4,	/* struct ub_xattr_set[count] */
	UB_SECT_XATTR_DATA	= 5,	/* xattr entries; count = entries of all sets */
	UB_SECT_NR_V1		= 6,	/* sections v1 and v2 define */
	UB_SECT_MAX		= 12,	/* slots in the header; 6..11 must be zero */
};

struct ub_section {
	__le64 offset;		/* multiple of 4096, >= 4096 (or 0 when empty) */
	__le64 size;		/* content bytes, without the zero padding */
	__le64 count;		/* records; meaning depends on the section */
	__le32 crc;		/* CRC-32C of the size content bytes (fsck) */
	__le32 reserved;
};

/* The header, 512 bytes at offset 0, zero-padded to 4096. */
struct ub_super {
	__u8   magic[UB_MAGIC_LEN];	/* UB_MAGIC */
	__le32 header_crc;		/* CRC-32C of the 512 bytes, this field as 0 */
	__le16 version_major;		/* UB_VERSION_MAJOR; others are refused */
	__le16 version_minor;		/* additions old readers may ignore */
	__le32 header_size;		/* UB_HEADER_SIZE */
	__le32 block_size_log2;		/* UB_BLOCK_SIZE_LOG2 */
	__le32 feature_compat;
	__le32 feature_ro_compat;
	__le32 feature_incompat;
	__le32 inline_threshold;	/* informational, <= 4096 */
	__le64 blob_size;		/* == file size, multiple of 4096 */
	__le64 root_ino;		/* inode index of the root directory */
	__le64 inode_count;		/* == sections[UB_SECT_INODES].count */
	__le64 dirent_count;		/* all dirents, without . and .. */
	__le64 data_bytes;		/* sum of regular file sizes */
	__u8   reserved[48];
	struct ub_section sections[UB_SECT_MAX];
};

/* ---- inodes (SPEC §4) -------------------------------------------------- */

/* ub_inode.layout: where the payload lives. */
enum {
	UB_LAYOUT_NONE		= 0,	/* no payload (empty file, devices, fifo, socket) */
	UB_LAYOUT_INLINE	= 1,	/* DATA[payload, payload + size) */
	UB_LAYOUT_EXTERNAL	= 2,	/* object named by DIGESTS[payload] */
	UB_LAYOUT_DIR		= 3,	/* DIRS[payload, payload + size), in chunks */
};

#define UB_INODE_SIZE		48
/*
 * 48 does not divide 4096: a page of INODES holds 85 inodes and ends with
 * 16 zero bytes, so no inode crosses a page.  Inode i is at
 * (i / 85) * 4096 + (i % 85) * 48 of the section.
 */
#define UB_INODES_PER_PAGE	(UB_BLOCK_SIZE / UB_INODE_SIZE)
#define UB_INLINE_MAX		4096	/* largest inline regular file */
#define UB_SYMLINK_MAX		4095	/* largest symlink target */
#define UB_FILE_SIZE_MAX	0x7fffffffffffffffULL	/* st_size is a signed 64-bit off_t */
#define UB_DIR_MAX		0xffffffffu	/* largest directory data (its size) */

/*
 * ub_inode.mtime: seconds since the epoch as a 34-bit two's complement number
 * in bits 0..33 (years 1697..2242, as ext4's 34-bit times), nanoseconds
 * (< 10^9) in bits 34..63.
 */
#define UB_MTIME_SEC_BITS	34
#define UB_MTIME_SEC_MASK	((1ull << UB_MTIME_SEC_BITS) - 1)
#define UB_MTIME_SEC_SIGN	(1ull << (UB_MTIME_SEC_BITS - 1))

/*
 * One inode; the INODES section is an array indexed by inode index i and a
 * reader reports st_ino = i + 1 (so the root, index 0, is 1, FUSE's root id).
 * Inline items and directory data are size bytes at payload.
 */
struct ub_inode {
	__le16 mode;		/* st_mode: type and permission bits (07777) */
	__u8   layout;		/* UB_LAYOUT_* */
	__u8   reserved;	/* zero */
	__le32 nlink;
	__le32 uid;
	__le32 gid;
	__le64 size;		/* reg: bytes; lnk: target length; dir: DIRS bytes */
	__le64 mtime;		/* seconds | nanoseconds << 34, see above */
	__le32 xattr_set;	/* 0: none; else 1-based index into XATTR_INDEX */
	__le32 aux;		/* chr/blk: new_encode_dev rdev; dir: parent index */
	__le64 payload;		/* DATA offset / DIGESTS index / DIRS offset */
};

/* File type bits of ub_inode.mode: the Linux S_IF* values. */
#define UB_S_IFMT	0170000
#define UB_S_IFSOCK	0140000
#define UB_S_IFLNK	0120000
#define UB_S_IFREG	0100000
#define UB_S_IFBLK	0060000
#define UB_S_IFDIR	0040000
#define UB_S_IFCHR	0020000
#define UB_S_IFIFO	0010000
#define UB_S_IPERM	07777

/* ---- directories (SPEC §5) --------------------------------------------- */

/*
 * A directory's data is size bytes at DIRS + payload, cut into
 * chunks of 4096 bytes (the last one shorter).  A directory of more than
 * 4096 bytes starts on a page, a smaller one never crosses a page, so every
 * chunk lies in one page; small directories are packed back to back, so a
 * chunk may start at any byte (no alignment: load dirent fields bytewise).
 * A chunk is n dirents, then the n names in the same order (not
 * NUL-terminated), then zero padding (only in a chunk that is not the last).
 * n is dirents[0].nameoff / 8; name k spans [nameoff_k, nameoff_k+1) and the
 * last one ends at the first zero byte or the chunk end.
 */
struct ub_dirent {
	__le32 ino;		/* inode index */
	__le16 nameoff;		/* offset of the name inside the chunk */
	__u8   file_type;	/* UB_DT_*, equals the inode's type */
	__u8   reserved;
};

#define UB_DIRENT_SIZE		8
#define UB_NAME_MAX		255
#define UB_DIR_CHUNK_SIZE	4096
#define UB_DIR_CHUNK_MIN	(UB_DIRENT_SIZE + 1)	/* one dirent, one name byte */

/* ub_dirent.file_type: Linux DT_* values. */
#define UB_DT_UNKNOWN	0
#define UB_DT_FIFO	1
#define UB_DT_CHR	2
#define UB_DT_DIR	4
#define UB_DT_BLK	6
#define UB_DT_REG	8
#define UB_DT_LNK	10
#define UB_DT_SOCK	12

/*
 * readdir positions: 0 is ".", 1 is "..", entry k of chunk c is
 * 2 + c * 4096 + k * 8.  Stable for the life of the blob.
 */
#define UB_DIRPOS_DOT		0
#define UB_DIRPOS_DOTDOT	1
#define UB_DIRPOS_FIRST		2

/* ---- digests (SPEC §7) ------------------------------------------------- */

#define UB_DIGEST_SIZE		32	/* fs-verity SHA-256 file digest */

/* ---- xattrs (SPEC §8) -------------------------------------------------- */

/* XATTR_INDEX record, referenced 1-based from ub_inode.xattr_set. */
struct ub_xattr_set {
	__le64 offset;		/* first entry, byte offset in XATTR_DATA */
	__le32 size;		/* bytes of all entries */
	__le16 count;		/* entries, 1..65535 */
	__le16 reserved;
};

/*
 * Header of one xattr entry in XATTR_DATA, followed by suffix_len name bytes
 * and value_len value bytes.  Entries are packed without padding and a set
 * may cross pages, so readers copy this header out instead of casting.
 */
struct ub_xattr_entry {
	__u8   prefix;		/* UB_XATTR_PREFIX_* */
	__u8   suffix_len;	/* name bytes after the prefix */
	__le16 reserved;
	__le32 value_len;	/* 0..UB_XATTR_VALUE_MAX */
};

#define UB_XATTR_ENTRY_SIZE	8
#define UB_XATTR_NAME_MAX	255	/* full name, prefix included */
#define UB_XATTR_VALUE_MAX	65536

/* Name prefix ids; the compiler uses the longest match. */
enum {
	UB_XATTR_PREFIX_NONE		= 0,	/* suffix is the full name */
	UB_XATTR_PREFIX_USER		= 1,	/* "user." */
	UB_XATTR_PREFIX_TRUSTED		= 2,	/* "trusted." */
	UB_XATTR_PREFIX_SECURITY	= 3,	/* "security." */
	UB_XATTR_PREFIX_ACL_ACCESS	= 4,	/* "system.posix_acl_access" */
	UB_XATTR_PREFIX_ACL_DEFAULT	= 5,	/* "system.posix_acl_default" */
	UB_XATTR_PREFIX_NR		= 6,
};

/*
 * Readers that serve the blob to overlayfs show an image's
 * "trusted.overlay.X" as "trusted.overlay.overlay.X" (SPEC §8).
 */
#define UB_XATTR_OVERLAY_PREFIX		"trusted.overlay."
#define UB_XATTR_OVERLAY_PREFIX_LEN	16
#define UB_XATTR_OVERLAY_ESCAPED	"trusted.overlay.overlay."
#define UB_XATTR_OVERLAY_ESCAPED_LEN	24
/* longest stored "trusted.overlay.*" name: escaped (8 bytes more) it is still <= 255 */
#define UB_XATTR_OVERLAY_NAME_MAX	(UB_XATTR_NAME_MAX - (UB_XATTR_OVERLAY_ESCAPED_LEN - UB_XATTR_OVERLAY_PREFIX_LEN))

/* ---- compile-time layout checks (kernel gnu11 and userspace alike) ----- */

#define UB_ASSERT_SIZE(type, bytes) \
	_Static_assert(sizeof(type) == (bytes), #type " must be " #bytes " bytes")
#define UB_ASSERT_OFF(type, field, off) \
	_Static_assert(__builtin_offsetof(type, field) == (off), \
		       #type "." #field " must be at " #off)

UB_ASSERT_SIZE(struct ub_section, 32);
UB_ASSERT_OFF(struct ub_section, offset, 0);
UB_ASSERT_OFF(struct ub_section, size, 8);
UB_ASSERT_OFF(struct ub_section, count, 16);
UB_ASSERT_OFF(struct ub_section, crc, 24);
UB_ASSERT_OFF(struct ub_section, reserved, 28);

UB_ASSERT_SIZE(struct ub_super, UB_HEADER_SIZE);
UB_ASSERT_OFF(struct ub_super, magic, 0);
UB_ASSERT_OFF(struct ub_super, header_crc, 8);
UB_ASSERT_OFF(struct ub_super, version_major, 12);
UB_ASSERT_OFF(struct ub_super, version_minor, 14);
UB_ASSERT_OFF(struct ub_super, header_size, 16);
UB_ASSERT_OFF(struct ub_super, block_size_log2, 20);
UB_ASSERT_OFF(struct ub_super, feature_compat, 24);
UB_ASSERT_OFF(struct ub_super, feature_ro_compat, 28);
UB_ASSERT_OFF(struct ub_super, feature_incompat, 32);
UB_ASSERT_OFF(struct ub_super, inline_threshold, 36);
UB_ASSERT_OFF(struct ub_super, blob_size, 40);
UB_ASSERT_OFF(struct ub_super, root_ino, 48);
UB_ASSERT_OFF(struct ub_super, inode_count, 56);
UB_ASSERT_OFF(struct ub_super, dirent_count, 64);
UB_ASSERT_OFF(struct ub_super, data_bytes, 72);
UB_ASSERT_OFF(struct ub_super, reserved, 80);
UB_ASSERT_OFF(struct ub_super, sections, 128);

UB_ASSERT_SIZE(struct ub_inode, UB_INODE_SIZE);
_Static_assert(UB_INODES_PER_PAGE == 85, "85 inodes per page");
_Static_assert(UB_INODE_SIZE % 8 == 0, "inodes keep 8-byte alignment inside a page");
UB_ASSERT_OFF(struct ub_inode, mode, 0);
UB_ASSERT_OFF(struct ub_inode, layout, 2);
UB_ASSERT_OFF(struct ub_inode, reserved, 3);
UB_ASSERT_OFF(struct ub_inode, nlink, 4);
UB_ASSERT_OFF(struct ub_inode, uid, 8);
UB_ASSERT_OFF(struct ub_inode, gid, 12);
UB_ASSERT_OFF(struct ub_inode, size, 16);
UB_ASSERT_OFF(struct ub_inode, mtime, 24);
UB_ASSERT_OFF(struct ub_inode, xattr_set, 32);
UB_ASSERT_OFF(struct ub_inode, aux, 36);
UB_ASSERT_OFF(struct ub_inode, payload, 40);

UB_ASSERT_SIZE(struct ub_dirent, UB_DIRENT_SIZE);
UB_ASSERT_OFF(struct ub_dirent, ino, 0);
UB_ASSERT_OFF(struct ub_dirent, nameoff, 4);
UB_ASSERT_OFF(struct ub_dirent, file_type, 6);
UB_ASSERT_OFF(struct ub_dirent, reserved, 7);

UB_ASSERT_SIZE(struct ub_xattr_set, 16);
_Static_assert(UB_BLOCK_SIZE % sizeof(struct ub_xattr_set) == 0, "sets never cross a page");
UB_ASSERT_OFF(struct ub_xattr_set, offset, 0);
UB_ASSERT_OFF(struct ub_xattr_set, size, 8);
UB_ASSERT_OFF(struct ub_xattr_set, count, 12);
UB_ASSERT_OFF(struct ub_xattr_set, reserved, 14);

UB_ASSERT_SIZE(struct ub_xattr_entry, UB_XATTR_ENTRY_SIZE);
UB_ASSERT_OFF(struct ub_xattr_entry, prefix, 0);
UB_ASSERT_OFF(struct ub_xattr_entry, suffix_len, 1);
UB_ASSERT_OFF(struct ub_xattr_entry, reserved, 2);
UB_ASSERT_OFF(struct ub_xattr_entry, value_len, 4);

_Static_assert(UB_BLOCK_SIZE % UB_DIGEST_SIZE == 0, "digests never cross a page");

#endif /* __UNIONBLOB_FS_H */
