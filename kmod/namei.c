// SPDX-License-Identifier: GPL-2.0-only
/*
 * Lookup: the reader binary-searches the directory's blocks, then the
 * entries of one block (SPEC §5), touching O(log blocks) pages.
 */
#include "internal.h"

/* The dirent's type must be the inode's (SPEC §10). */
static int ubfs_check_dtype(struct inode *inode, unsigned int dtype)
{
	if (ub_mode_to_dtype(inode->i_mode) == dtype)
		return 0;
	ubfs_err(inode->i_sb, "dirent type %u does not match inode %lu (mode 0%o)",
		 dtype, inode->i_ino, inode->i_mode);
	return -EUCLEAN;
}

static struct dentry *ubfs_lookup(struct inode *dir, struct dentry *dentry,
				  unsigned int flags)
{
	const struct ub_blob *b = UBFS_BLOB(dir);
	struct inode *inode = NULL;
	unsigned int dtype;
	u64 index;
	int err;

	if (dentry->d_name.len > UB_NAME_MAX)
		return ERR_PTR(-ENAMETOOLONG);

	err = ub_lookup(b, &UBFS_I(dir)->info, dentry->d_name.name,
			dentry->d_name.len, &index, &dtype);
	if (err == -ENOENT)
		return d_splice_alias(NULL, dentry);	/* negative dentry */
	if (err)
		return ERR_PTR(ubfs_reader_error(dir->i_sb, err, "lookup",
						 UBFS_I(dir)->info.index));

	inode = ubfs_iget(dir->i_sb, index);
	if (IS_ERR(inode))
		return ERR_CAST(inode);
	err = ubfs_check_dtype(inode, dtype);
	if (err) {
		iput(inode);
		return ERR_PTR(err);
	}
	/* A corrupt blob may name a directory twice: d_splice_alias refuses loops. */
	return d_splice_alias(inode, dentry);
}

const struct inode_operations ubfs_dir_iops = {
	.lookup		= ubfs_lookup,
	.getattr	= ubfs_getattr,
	.listxattr	= ubfs_listxattr,
#ifdef CONFIG_FS_POSIX_ACL
#ifdef UBFS_HAVE_GET_INODE_ACL
	.get_inode_acl	= ubfs_get_acl,
#else
	.get_acl	= ubfs_get_acl,
#endif
#endif
};
