/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Differences between the kernels we build for (Debian's 6.1 and 6.12),
 * kept out of the code that uses them.
 */
#ifndef __UNIONBLOB_COMPAT_H
#define __UNIONBLOB_COMPAT_H

#include <linux/version.h>
#include <linux/fs.h>
#include <linux/namei.h>
#include <linux/splice.h>

/* idmapped mounts: user_namespace until 6.3, mnt_idmap after. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
#define UBFS_IDMAP_T struct mnt_idmap *
#else
#define UBFS_IDMAP_T struct user_namespace *
#endif

static inline void ubfs_fillattr(UBFS_IDMAP_T idmap, u32 request_mask,
				 struct inode *inode, struct kstat *stat)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	generic_fillattr(idmap, request_mask, inode, stat);
#else
	generic_fillattr(idmap, inode, stat);
#endif
}

/* The blob stores one time; it is reported as atime, mtime and ctime. */
static inline void ubfs_set_times(struct inode *inode, struct timespec64 ts)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
	inode_set_atime_to_ts(inode, ts);
	inode_set_mtime_to_ts(inode, ts);
	inode_set_ctime_to_ts(inode, ts);
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	/* 6.6 hid i_ctime (__i_ctime) a release before the other two */
	inode->i_atime = ts;
	inode->i_mtime = ts;
	inode_set_ctime_to_ts(inode, ts);
#else
	inode->i_atime = ts;
	inode->i_mtime = ts;
	inode->i_ctime = ts;
#endif
}

/* The inode ACL getter was ->get_acl until 6.2, then ->get_inode_acl. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
#define UBFS_HAVE_GET_INODE_ACL 1
#endif

/* generic_file_splice_read went away in 6.5. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define ubfs_generic_splice_read filemap_splice_read
#else
#define ubfs_generic_splice_read generic_file_splice_read
#endif

/*
 * Backing files (FMODE_BACKING, <linux/backing-file.h>): the helpers
 * overlayfs and FUSE passthrough use.  Their signatures moved between 6.8
 * and 6.12.y; we use them only on the 6.12 ABI (user_file argument), which
 * is what Debian's 6.12 has.  Older kernels get dentry_open() and the
 * vfs_iter_read()/call_mmap() path.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#define UBFS_HAVE_BACKING_FILE 1
#endif

/* fsverity_get_digest() is exported (and has this signature) from 6.5 on. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define UBFS_HAVE_FSVERITY_GET_DIGEST 1
#endif

/*
 * vfs_path_lookup() is exported on both, but 6.1 declares it only in
 * fs/internal.h; an identical redeclaration is harmless where namei.h has it.
 */
int vfs_path_lookup(struct dentry *, struct vfsmount *, const char *,
		    unsigned int, struct path *);

#endif /* __UNIONBLOB_COMPAT_H */
