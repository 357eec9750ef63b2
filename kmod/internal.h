/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * unionblob: a read-only filesystem serving one metadata blob (format/SPEC.md)
 * whose regular files live in a content-addressed object store.
 *
 * The blob is read through the page cache of the blob file, one page at a
 * time, by the shared reader (format/c/ubreader.c); nothing of it is copied
 * at mount.  Regular files open the object named by their digest and hand
 * reads and mmaps to it, so every mount of every blob naming the same object
 * shares its pages.
 */
#ifndef __UNIONBLOB_INTERNAL_H
#define __UNIONBLOB_INTERNAL_H

#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/path.h>
#include <linux/cred.h>
#include <linux/ratelimit.h>
#include "compat.h"
#include "format/c/ubreader.h"

#define UNIONBLOB_SUPER_MAGIC	0x75626c62	/* "ublb" */
#define UBFS_MAX_STORES		16

/* verity= */
enum ubfs_verity_mode {
	UBFS_VERITY_OFF,	/* never check objects */
	UBFS_VERITY_TRY,	/* check objects that have fs-verity */
	UBFS_VERITY_REQUIRE,	/* every object must have fs-verity and our digest */
};

struct ubfs_sb_info {
	struct ub_blob blob;		/* reader state; blob.ctx is this sbi */
	struct file *blob_file;		/* the blob; its page cache is our metadata cache */
	struct path stores[UBFS_MAX_STORES];	/* basedir roots, in search order */
	unsigned int nr_stores;
	const struct cred *creds;	/* mounter's; objects are opened with them */
	enum ubfs_verity_mode verity;
	bool has_digest;
	u8 digest[UB_DIGEST_SIZE];	/* digest= */
	char *blob_name;		/* for show_options and log lines */
	char *basedir;
	u32 handle_gen;			/* generation of file handles (export.c) */
};

/* Options gathered by the fs_context before the superblock exists. */
struct ubfs_fs_context {
	char *blob_name;
	char *basedir;
	enum ubfs_verity_mode verity;
	bool has_digest;
	u8 digest[UB_DIGEST_SIZE];
};

struct ubfs_inode {
	struct ub_inode_info info;	/* the decoded blob inode, checked by the reader */
	/*
	 * verity=require/try on 6.1 has to hash an object to learn its digest;
	 * the last object found to match is remembered by identity, so an
	 * object that fs-verity keeps immutable is hashed once per inode.
	 */
	struct mutex verify_lock;
	dev_t verified_dev;
	unsigned long verified_ino;
	u32 verified_gen;
	/*
	 * External files: the object found by the first successful open, so
	 * later opens neither read the digest nor look it up in the stores.
	 * Held (like overlayfs's lower paths) until the inode is evicted;
	 * protected by i_lock.
	 */
	struct path object;
	struct inode vfs_inode;
};

static inline struct ubfs_sb_info *UBFS_SB(const struct super_block *sb)
{
	return sb->s_fs_info;
}

static inline struct ubfs_inode *UBFS_I(const struct inode *inode)
{
	return container_of(inode, struct ubfs_inode, vfs_inode);
}

static inline const struct ub_blob *UBFS_BLOB(const struct inode *inode)
{
	return &UBFS_SB(inode->i_sb)->blob;
}

/*
 * Corruption is reported once per burst: a hostile blob must not be able to
 * flood the log any more than it may crash us.
 */
#define ubfs_err(sb, fmt, ...) \
	pr_err_ratelimited("unionblob (%s): " fmt "\n", \
			   UBFS_SB(sb)->blob_name, ##__VA_ARGS__)
#define ubfs_warn(sb, fmt, ...) \
	pr_warn_ratelimited("unionblob (%s): " fmt "\n", \
			    UBFS_SB(sb)->blob_name, ##__VA_ARGS__)

/* Map reader errors for the VFS, logging corruption. */
int ubfs_reader_error(struct super_block *sb, int err, const char *what, u64 index);

/* super.c */
extern struct file_system_type ubfs_fs_type;

/* blob.c */
int ubfs_blob_open(struct super_block *sb, struct ubfs_sb_info *sbi, struct fs_context *fc);
void ubfs_blob_close(struct ubfs_sb_info *sbi);

/* inode.c */
struct inode *ubfs_iget(struct super_block *sb, u64 index);
int ubfs_getattr(UBFS_IDMAP_T idmap, const struct path *path,
		 struct kstat *stat, u32 request_mask, unsigned int flags);
extern const struct inode_operations ubfs_file_iops;
extern const struct inode_operations ubfs_symlink_iops;
extern const struct inode_operations ubfs_special_iops;

/* export.c */
extern const struct export_operations ubfs_export_ops;

/* namei.c */
extern const struct inode_operations ubfs_dir_iops;

/* dir.c */
extern const struct file_operations ubfs_dir_fops;

/* data.c */
extern const struct file_operations ubfs_external_fops;
extern const struct file_operations ubfs_inline_fops;
extern const struct address_space_operations ubfs_inline_aops;
extern const struct address_space_operations ubfs_symlink_aops;

/* xattr.c */
/* not "* const": 6.1's ->s_xattr is a plain pointer to pointers */
extern const struct xattr_handler *ubfs_xattr_handlers[];
ssize_t ubfs_listxattr(struct dentry *dentry, char *buffer, size_t size);
#ifdef CONFIG_FS_POSIX_ACL
struct posix_acl *ubfs_get_acl(struct inode *inode, int type, bool rcu);
#endif

/* verity.c */
int ubfs_compute_verity_digest(struct file *file, u8 digest[UB_DIGEST_SIZE]);
int ubfs_file_verity_digest(struct file *file, u8 digest[UB_DIGEST_SIZE], bool *measured);
int ubfs_verify_object(struct inode *inode, struct file *real, const u8 want[UB_DIGEST_SIZE]);

#endif /* __UNIONBLOB_INTERNAL_H */
