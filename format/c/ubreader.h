/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only */
/*
 * ubreader: the one reader of unionblob v2 blobs (format/SPEC.md).
 *
 * The kernel module, the FUSE server, ubdump and the fuzzers compile this
 * same code.  The core therefore:
 *   - never allocates, never recurses, uses no floating point and keeps
 *     every stack frame small;
 *   - reaches the blob only through the embedder's get_page()/put_page(),
 *     one 4096-byte page at a time (the kernel serves them from the blob
 *     file's page cache, userspace from an mmap);
 *   - trusts nothing in the blob: every offset, length, count and index is
 *     checked, with overflow-safe arithmetic, before it is used.
 *
 * Errors are negative errno values:
 *   -EUCLEAN  the blob is corrupt (FUSE should answer EIO)
 *   -EIO      get_page() failed
 *   -ENOENT   no such name (lookup)
 *   -ENODATA  no such xattr (getxattr)
 *   -ERANGE   caller's buffer too small (listxattr/getxattr, like the syscalls)
 *   -ENOTDIR  a directory operation on a non-directory
 *   -EINVAL   the operation does not apply (e.g. digest of an inline file),
 *             or an unsupported blob (version, features, header size)
 *
 * Inode numbers: the API speaks inode *indexes* (0-based, as stored).  What
 * stat()/readdir()/FUSE show is st_ino = index + 1; use ub_index_to_st_ino()
 * and ub_st_ino_to_index() at the boundary.
 *
 * Thread safety: after ub_open() a struct ub_blob is read-only; every
 * function here may run concurrently on it (get_page/put_page must allow
 * that).  Pointers handed to callbacks are valid only during the callback.
 */
#ifndef __UBREADER_H
#define __UBREADER_H

#include "ub_compat.h"
#include "../unionblob_fs.h"

/* Parsed section table entry (host byte order). */
struct ub_sect {
	u64 offset;
	u64 size;
	u64 count;
	u32 crc;
};

struct ub_blob {
	/* ---- set by the embedder before ub_open() ---- */
	u64 size;	/* bytes of the blob file */
	/*
	 * Map page @index (bytes [index * 4096, index * 4096 + 4096)) for
	 * reading; the pointer must be at least 8-byte aligned (records are
	 * read in place).  Return NULL on I/O error.  *cookie is handed back
	 * to put_page().  Only called for index < size / 4096; every call is
	 * matched by exactly one put_page() before the API function returns;
	 * the only page held across a callback is the directory page that
	 * ub_readdir() is emitting from, and callbacks may map more (nested
	 * kmap_local is fine).  No locks are taken.
	 * Kernel: read_mapping_folio() + kmap_local_folio(), cookie = folio.
	 */
	const void *(*get_page)(void *ctx, u64 index, void **cookie);
	void (*put_page)(void *ctx, void *cookie);	/* may be NULL */
	void *ctx;

	/* ---- filled by ub_open() ---- */
	/*
	 * Set as soon as the magic is good, before the header crc is checked,
	 * also when ub_open() then refuses the version (-EINVAL: 1 or above
	 * UB_VERSION_MAJOR; 0 is -EUCLEAN), so the embedder can say "format
	 * version 1: rebuild the blob" instead of "unsupported" or "corrupt".
	 */
	u32 version_major;
	u32 version_minor;
	u32 feature_compat;
	u32 feature_ro_compat;
	u32 inline_threshold;
	u64 root_ino;		/* index of the root directory */
	u64 inode_count;
	u64 dirent_count;
	u64 data_bytes;
	struct ub_sect sect[UB_SECT_NR_V1];
};

/* ub_open() flags */
#define UB_OPEN_NO_CRC	0x1	/* skip header_crc (fuzzers, corruption tests) */

/*
 * ub_open - validate the header and section table (SPEC §3) and the root
 * inode, and fill the parsed fields of @b.
 * @b->size, get_page, put_page and ctx must be set.  Returns 0, -EUCLEAN
 * (bad magic, crc, sizes, offsets), -EINVAL (unknown major version,
 * header_size, block size, incompat feature) or -EIO.
 */
int ub_open(struct ub_blob *b, unsigned int flags);

/*
 * ub_check_section_crc - compare CRC-32C of section @id's content with the
 * table (fsck; serving readers need not call it).  Reads the whole section.
 * 0, -EUCLEAN on mismatch, -EINVAL for a bad id, -EIO.
 */
int ub_check_section_crc(const struct ub_blob *b, unsigned int id);

/* CRC-32C (Castagnoli), reflected.  Start with crc = 0 (init/final xor done inside). */
u32 ub_crc32c(u32 crc, const void *buf, size_t len);

/*
 * ub_handle_generation - the generation of file handles for a mount of @b
 * (after ub_open): CRC-32C of the section crcs and the inode count, as
 * little-endian bytes.  The same for byte-identical blobs (a rebuild of one
 * image), different for another blob with high probability, so a handle
 * kept across a remount of another blob at the same place is stale.
 */
u32 ub_handle_generation(const struct ub_blob *b);

/* ---------------------------------------------------------------------- */
/* Inodes */

/* An inode decoded to host order.  Produced only by ub_read_inode(). */
struct ub_inode_info {
	u64 index;		/* inode index; st_ino = index + 1 */
	u32 mode;		/* st_mode (type | 07777) */
	u32 nlink;
	u32 uid;
	u32 gid;
	u64 size;
	s64 mtime_sec;
	u32 mtime_nsec;
	u32 xattr_set;		/* 0 or 1-based XATTR_INDEX index (checked) */
	u32 aux;		/* rdev (chr/blk) or parent index (dir, checked) */
	u8  layout;		/* UB_LAYOUT_* (combination checked) */
	u64 payload;		/* DATA offset, DIGESTS index or DIRS offset */
	u32 payload_len;	/* inline / directory bytes: size, not stored twice */
};

/*
 * ub_read_inode - read and validate inode @index.  Checks the combinations
 * of SPEC §4: known file type and layout, sizes, payload ranges inside
 * their sections, mtime_nsec, xattr_set and a directory's parent index.
 * 0, -EUCLEAN (also for index >= inode_count), -EIO.
 */
int ub_read_inode(const struct ub_blob *b, u64 index, struct ub_inode_info *out);

static inline u64 ub_index_to_st_ino(u64 index) { return index + 1; }
/* FUSE node id / st_ino back to an index; returns false for 0. */
static inline bool ub_st_ino_to_index(u64 st_ino, u64 *index)
{
	if (st_ino == 0)
		return false;
	*index = st_ino - 1;
	return true;
}

static inline u64 ub_inode_st_ino(const struct ub_inode_info *i) { return i->index + 1; }
/* st_mode as stored: type and permission bits only (checked). */
static inline u32 ub_inode_st_mode(const struct ub_inode_info *i) { return i->mode; }
static inline u32 ub_inode_type(const struct ub_inode_info *i) { return i->mode & UB_S_IFMT; }
static inline bool ub_inode_is_dir(const struct ub_inode_info *i) { return ub_inode_type(i) == UB_S_IFDIR; }
static inline bool ub_inode_is_reg(const struct ub_inode_info *i) { return ub_inode_type(i) == UB_S_IFREG; }
static inline bool ub_inode_is_lnk(const struct ub_inode_info *i) { return ub_inode_type(i) == UB_S_IFLNK; }
static inline bool ub_inode_is_dev(const struct ub_inode_info *i)
{
	return ub_inode_type(i) == UB_S_IFCHR || ub_inode_type(i) == UB_S_IFBLK;
}
/* The regular file's content is in the object store (ub_get_digest()). */
static inline bool ub_inode_is_external(const struct ub_inode_info *i) { return i->layout == UB_LAYOUT_EXTERNAL; }
/* Content (regular file) or target (symlink) is read with ub_read_data(). */
static inline bool ub_inode_is_inline(const struct ub_inode_info *i) { return i->layout == UB_LAYOUT_INLINE; }
/* Parent directory index (directories only; the root's is itself). */
static inline u64 ub_inode_parent(const struct ub_inode_info *i) { return i->aux; }
/* readdir position after a directory's last entry: 2 + chunks * 4096. */
static inline u64 ub_dir_end_pos(const struct ub_inode_info *dir)
{
	return UB_DIRPOS_FIRST + ((((u64)dir->payload_len + UB_DIR_CHUNK_SIZE - 1) /
				   UB_DIR_CHUNK_SIZE) * UB_DIR_CHUNK_SIZE);
}

/* Linux new_decode_dev() of aux; 0 for non-devices.  Same as MAJOR()/MINOR() of st_rdev. */
static inline u32 ub_inode_rdev_major(const struct ub_inode_info *i)
{
	return ub_inode_is_dev(i) ? (i->aux & 0xfff00u) >> 8 : 0;
}
static inline u32 ub_inode_rdev_minor(const struct ub_inode_info *i)
{
	return ub_inode_is_dev(i) ? (i->aux & 0xffu) | ((i->aux >> 12) & 0xfff00u) : 0;
}
/* Kernel: pass to new_decode_dev(); userspace: makedev(major, minor). */
static inline u32 ub_inode_rdev_raw(const struct ub_inode_info *i) { return ub_inode_is_dev(i) ? i->aux : 0; }

/* UB_DT_* of a mode (UB_DT_UNKNOWN for an unknown type). */
unsigned int ub_mode_to_dtype(u32 mode);
static inline unsigned int ub_inode_dtype(const struct ub_inode_info *i) { return ub_mode_to_dtype(i->mode); }

/* ---------------------------------------------------------------------- */
/* Directories */

/*
 * ub_lookup - find @name (@len bytes, no NUL needed) in directory @dir:
 * binary search over the chunks by first name, then inside one chunk
 * (SPEC §5); touches O(log chunks) pages.  "." and ".." resolve to @dir
 * and its parent.
 * On success *ino is the entry's inode index and *dtype its UB_DT_*.
 * The caller must check that the inode it then reads has that type
 * (ub_lookup_inode() does all of it).
 * 0, -ENOENT (also for len 0 or > 255), -ENOTDIR, -EUCLEAN, -EIO.
 */
int ub_lookup(const struct ub_blob *b, const struct ub_inode_info *dir,
	      const char *name, size_t len, u64 *ino, unsigned int *dtype);

/*
 * ub_lookup_inode - ub_lookup() + ub_read_inode() + the SPEC §10 check that
 * the dirent's file type equals the inode's (-EUCLEAN otherwise).
 */
int ub_lookup_inode(const struct ub_blob *b, const struct ub_inode_info *dir,
		    const char *name, size_t len, struct ub_inode_info *out);

/* One entry handed to a ub_filldir_t. */
struct ub_dirent_info {
	const char *name;	/* not NUL-terminated; valid during the callback */
	u32 name_len;		/* 1..255 */
	u64 ino;		/* inode index (st_ino - 1) */
	unsigned int dtype;	/* UB_DT_* */
	u64 pos;		/* this entry's readdir position */
	u64 next_pos;		/* position of the following entry (FUSE's off) */
};

/*
 * Return 0 to continue, nonzero to stop (buffer full): that entry is not
 * consumed.  Typical callbacks:
 *   kernel:  ctx->pos = de->pos;
 *            if (!dir_emit(ctx, de->name, de->name_len,
 *                          ub_index_to_st_ino(de->ino), de->dtype))
 *                    return 1;
 *            ctx->pos = de->next_pos; return 0;
 *   FUSE:    n = fuse_add_direntry(req, p, left, name, &st, de->next_pos);
 *            return n > left;   (name NUL-terminated in a local copy)
 * UB_DT_* values are the kernel's DT_* values.
 */
typedef int (*ub_filldir_t)(void *arg, const struct ub_dirent_info *de);

/*
 * ub_readdir - emit the entries of @dir from position *@pos on (SPEC §5:
 * 0 ".", 1 "..", then 2 + chunk * 4096 + k * 8; a position that is not an
 * entry boundary resumes at the next entry).  Names are checked (1..255
 * bytes, no '/' or NUL, not "." or "..", increasing within a chunk).
 * When @emit returns nonzero, *@pos is the position of the entry it refused
 * and ub_readdir returns 0; at the end of the directory *@pos is
 * ub_dir_end_pos() and it returns 0.  On error it returns the error with
 * *@pos at the entry that failed.  -ENOTDIR, -EUCLEAN, -EIO.
 * Callers that emit "." and ".." themselves just start at 2.  @emit may
 * call other ub_* functions (e.g. ub_read_inode() for readdirplus).
 */
int ub_readdir(const struct ub_blob *b, const struct ub_inode_info *dir,
	       u64 *pos, ub_filldir_t emit, void *arg);

/* ---------------------------------------------------------------------- */
/* File data */

/*
 * ub_read_data - copy up to @len bytes at @off of an INLINE inode (a small
 * regular file's content or a symlink's target) into @dst.  Returns the
 * number of bytes copied (0 at or past the end), -EINVAL when the inode has
 * no inline data (external, empty, dir, ...), -EUCLEAN, -EIO.  An item is
 * at most 4096 bytes and inside one page, so one call reads it all.
 */
int ub_read_data(const struct ub_blob *b, const struct ub_inode_info *ino,
		 u64 off, void *dst, size_t len);

/*
 * ub_readlink - a symlink's target, NUL-terminated, into @buf (@size must be
 * at least ino->size + 1, i.e. at most 4096).  Returns the target length,
 * -EINVAL (not a symlink), -ERANGE, -EUCLEAN (NUL inside the target), -EIO.
 */
int ub_readlink(const struct ub_blob *b, const struct ub_inode_info *ino,
		char *buf, size_t size);

/*
 * ub_get_digest - the fs-verity digest naming an EXTERNAL regular file's
 * object.  0, -EINVAL (not external), -EUCLEAN, -EIO.
 */
int ub_get_digest(const struct ub_blob *b, const struct ub_inode_info *ino,
		  u8 out[UB_DIGEST_SIZE]);

/* ub_read_digest - DIGESTS[@index] (fsck/dump).  0, -EUCLEAN, -EIO. */
int ub_read_digest(const struct ub_blob *b, u64 index, u8 out[UB_DIGEST_SIZE]);

#define UB_OBJECT_PATH_LEN	66	/* "xx/" + 62 hex + NUL */
/*
 * ub_object_path - "xx/yyyy..." (lowercase hex, NUL-terminated) of an
 * object relative to STORE/objects.  Returns the length, 65.
 */
int ub_object_path(const u8 digest[UB_DIGEST_SIZE], char out[UB_OBJECT_PATH_LEN]);

/* ---------------------------------------------------------------------- */
/* Xattrs */

/*
 * Flag for the xattr functions: present an image's trusted.overlay.X as
 * trusted.overlay.overlay.X (SPEC §8).  The kernel module and FUSE set it;
 * dump and extract do not.  With it, getxattr of trusted.overlay.X (X not
 * starting with "overlay.") is -ENODATA, as nothing is shown by that name.
 */
#define UB_XATTR_ESCAPE_OVERLAY	0x1
/*
 * Flag for ub_listxattr: leave out trusted.* names, as a filesystem does for
 * a caller without CAP_SYS_ADMIN (who would get -ENODATA reading them).  The
 * FUSE server sets it per request; the kernel module filters in its handler.
 */
#define UB_XATTR_HIDE_TRUSTED	0x2
/*
 * Flag for ub_listxattr: leave out user.* names of inodes other than regular
 * files and directories, which the VFS will not let anyone read (-ENODATA;
 * overlayfs's copy-up stops at the first listed name it cannot read).
 */
#define UB_XATTR_HIDE_UNREADABLE_USER	0x4

/* Iterator over the xattr set of one inode. */
struct ub_xattr_iter {
	const struct ub_blob *b;
	u64 pos;		/* absolute blob offset of the next entry */
	u64 end;		/* absolute end of the set */
	u32 left;		/* entries still to read */
};

/* One entry, located in the blob (names and values may cross pages). */
struct ub_xattr {
	const char *prefix;	/* prefix string of the id ("" for id 0) */
	u32 prefix_len;
	u32 suffix_len;
	u32 name_len;		/* prefix_len + suffix_len, 1..255, unescaped */
	u32 value_len;		/* 0..65536 */
	u64 suffix_off;		/* absolute blob offsets */
	u64 value_off;
	bool overlay;		/* full name starts with "trusted.overlay." */
};

/*
 * ub_xattr_iter_init - start iterating @ino's xattrs (checks the set
 * record: count >= 1, inside XATTR_DATA).  An inode without xattrs gives an
 * empty iteration.  0, -EUCLEAN, -EIO.
 */
int ub_xattr_iter_init(const struct ub_blob *b, const struct ub_inode_info *ino,
		       struct ub_xattr_iter *it);

/*
 * ub_xattr_next - the next entry, in stored (name) order.  Returns 1 with
 * *@x filled, 0 at the end (after checking the entries exactly fill the
 * set), -EUCLEAN (bad prefix id, name length, value length, NUL in a name,
 * entry past the set) or -EIO.
 */
int ub_xattr_next(struct ub_xattr_iter *it, struct ub_xattr *x);

/* Length of the name of @x as presented under @flags. */
static inline u32 ub_xattr_name_len(const struct ub_xattr *x, unsigned int flags)
{
	if ((flags & UB_XATTR_ESCAPE_OVERLAY) && x->overlay)
		return x->name_len + (UB_XATTR_OVERLAY_ESCAPED_LEN - UB_XATTR_OVERLAY_PREFIX_LEN);
	return x->name_len;
}

/*
 * ub_xattr_copy_name - write the full name of @x as presented under @flags
 * (not NUL-terminated) into @buf.  Returns its length or -ERANGE.
 */
int ub_xattr_copy_name(const struct ub_blob *b, const struct ub_xattr *x,
		       unsigned int flags, char *buf, size_t size);

/* ub_xattr_copy_value - copy the value of @x; its length or -ERANGE, -EIO. */
int ub_xattr_copy_value(const struct ub_blob *b, const struct ub_xattr *x,
			void *buf, size_t size);

/*
 * ub_listxattr - like listxattr(2): the names (as presented under @flags),
 * each followed by a NUL, into @buf.  @size 0 returns the size needed.
 * Returns the bytes used, -ERANGE, -EUCLEAN, -EIO.
 */
long ub_listxattr(const struct ub_blob *b, const struct ub_inode_info *ino,
		  unsigned int flags, char *buf, size_t size);

/*
 * ub_getxattr - like getxattr(2): the value of the xattr called @name
 * (@name_len bytes, as presented under @flags).  @size 0 returns the value
 * length.  The whole set is validated even after a match, so corruption is
 * reported the same way whichever name is asked.
 * Returns the value length, -ENODATA, -ERANGE, -EUCLEAN, -EIO.
 */
int ub_getxattr(const struct ub_blob *b, const struct ub_inode_info *ino,
		unsigned int flags, const char *name, size_t name_len,
		void *buf, size_t size);

#endif /* __UBREADER_H */
