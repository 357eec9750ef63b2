// SPDX-License-Identifier: GPL-2.0-only
/*
 * Inodes: one VFS inode per blob inode index, found with iget_locked() on
 * st_ino = index + 1, so hardlinks share one inode and numbers are stable.
 */
#include <linux/pagemap.h>
#include "internal.h"

static void ubfs_set_regular_ops(struct inode *inode)
{
	inode->i_op = &ubfs_file_iops;
	if (ub_inode_is_external(&UBFS_I(inode)->info)) {
		/* Data lives in the object; reads and mmaps go there. */
		inode->i_fop = &ubfs_external_fops;
	} else {
		/* Inline or empty: served from our own page cache. */
		inode->i_fop = &ubfs_inline_fops;
		inode->i_mapping->a_ops = &ubfs_inline_aops;
	}
}

static int ubfs_fill_inode(struct inode *inode)
{
	const struct ub_inode_info *info = &UBFS_I(inode)->info;
	struct timespec64 ts = {
		.tv_sec = info->mtime_sec,
		.tv_nsec = info->mtime_nsec,
	};

	inode->i_mode = info->mode;
	i_uid_write(inode, info->uid);
	i_gid_write(inode, info->gid);
	set_nlink(inode, info->nlink);
	inode->i_size = info->size;
	inode->i_blocks = round_up(info->size, UB_BLOCK_SIZE) >> 9;
	ubfs_set_times(inode, ts);

	switch (info->mode & S_IFMT) {
	case S_IFREG:
		ubfs_set_regular_ops(inode);
		break;
	case S_IFDIR:
		inode->i_op = &ubfs_dir_iops;
		inode->i_fop = &ubfs_dir_fops;
		break;
	case S_IFLNK:
		/* page_get_link() reads the target from our page cache */
		inode->i_op = &ubfs_symlink_iops;
		inode->i_mapping->a_ops = &ubfs_inline_aops;
		inode_nohighmem(inode);
		break;
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		inode->i_op = &ubfs_special_iops;
		init_special_inode(inode, inode->i_mode,
				   new_decode_dev(ub_inode_rdev_raw(info)));
		break;
	default:
		/* ub_read_inode() refuses unknown types; be defensive anyway. */
		return -EUCLEAN;
	}
	return 0;
}

struct inode *ubfs_iget(struct super_block *sb, u64 index)
{
	struct inode *inode;
	int err;

	/* st_ino is an unsigned long; refuse indexes that would alias. */
	if (index >= ULONG_MAX || index >= UBFS_SB(sb)->blob.inode_count) {
		ubfs_err(sb, "inode index %llu out of range", index);
		return ERR_PTR(-EUCLEAN);
	}
	inode = iget_locked(sb, index + 1);
	if (!inode)
		return ERR_PTR(-ENOMEM);
	if (!(inode->i_state & I_NEW))
		return inode;

	err = ub_read_inode(&UBFS_SB(sb)->blob, index, &UBFS_I(inode)->info);
	if (err)
		err = ubfs_reader_error(sb, err, "reading inode", index);
	else
		err = ubfs_fill_inode(inode);
	if (err) {
		iget_failed(inode);
		return ERR_PTR(err);
	}
	unlock_new_inode(inode);
	return inode;
}

/* Everything stat shows comes from the blob inode, filled at iget. */
int ubfs_getattr(UBFS_IDMAP_T idmap, const struct path *path,
		 struct kstat *stat, u32 request_mask, unsigned int flags)
{
	struct inode *inode = d_inode(path->dentry);

	ubfs_fillattr(idmap, request_mask, inode, stat);
	return 0;
}

#ifdef CONFIG_FS_POSIX_ACL
#ifdef UBFS_HAVE_GET_INODE_ACL
#define UBFS_ACL_OPS	.get_inode_acl = ubfs_get_acl,
#else
#define UBFS_ACL_OPS	.get_acl = ubfs_get_acl,
#endif
#else
#define UBFS_ACL_OPS
#endif

const struct inode_operations ubfs_file_iops = {
	.getattr	= ubfs_getattr,
	.listxattr	= ubfs_listxattr,
	UBFS_ACL_OPS
};

const struct inode_operations ubfs_symlink_iops = {
	.get_link	= page_get_link,
	.getattr	= ubfs_getattr,
	.listxattr	= ubfs_listxattr,
};

const struct inode_operations ubfs_special_iops = {
	.getattr	= ubfs_getattr,
	.listxattr	= ubfs_listxattr,
	UBFS_ACL_OPS
};
