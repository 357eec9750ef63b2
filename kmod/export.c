// SPDX-License-Identifier: GPL-2.0-only
/*
 * File handles: name_to_handle_at(2)/open_by_handle_at(2), NFS export, and
 * what overlayfs asks of a lower layer for index=on or nfs_export=on.
 *
 * A handle is the inode's blob index (64 bits) and a generation: a checksum
 * of the blob's section checksums (ub_handle_generation(), which the FUSE
 * server uses too), the same for every inode of one blob.  A
 * handle taken on one blob is stale (ESTALE) on a mount of another blob at
 * the same place; a rebuild of the same image, byte for byte the same blob
 * (SPEC: reproducible), keeps its handles valid, as it names the same
 * inodes.  Directories record their parent's index (the inode's aux), so a
 * disconnected directory dentry is reconnected without a search.
 *
 * Handles come from userspace (CAP_DAC_READ_SEARCH) or an NFS client: an
 * index is checked against the inode count before it reaches the reader,
 * and a forged one is ESTALE, not a corruption report.
 */
#include <linux/exportfs.h>
#include "internal.h"

/* The values upstream gives FILEID_INO64_GEN and FILEID_INO64_GEN_PARENT. */
#define UBFS_FILEID_INO64_GEN		0x81
#define UBFS_FILEID_INO64_GEN_PARENT	0x82
/* Lengths in 32-bit words: index (2) and generation (1), then the parent's. */
#define UBFS_FH_WORDS			3
#define UBFS_FH_WORDS_PARENT		6

static void ubfs_put_fh(u32 *fh, const struct inode *inode)
{
	u64 index = UBFS_I(inode)->info.index;

	fh[0] = lower_32_bits(index);
	fh[1] = upper_32_bits(index);
	fh[2] = UBFS_SB(inode->i_sb)->handle_gen;
}

static int ubfs_encode_fh(struct inode *inode, u32 *fh, int *max_len,
			  struct inode *parent)
{
	int len = parent ? UBFS_FH_WORDS_PARENT : UBFS_FH_WORDS;

	if (*max_len < len) {
		*max_len = len;
		return FILEID_INVALID;
	}
	ubfs_put_fh(fh, inode);
	if (parent)
		ubfs_put_fh(fh + UBFS_FH_WORDS, parent);
	*max_len = len;
	return parent ? UBFS_FILEID_INO64_GEN_PARENT : UBFS_FILEID_INO64_GEN;
}

/* The dentry of the inode @fh names, or ESTALE for a handle of another blob or no inode. */
static struct dentry *ubfs_fh_dentry(struct super_block *sb, const u32 *fh)
{
	const struct ubfs_sb_info *sbi = UBFS_SB(sb);
	u64 index = fh[0] | ((u64)fh[1] << 32);

	if (fh[2] != sbi->handle_gen || index >= sbi->blob.inode_count)
		return ERR_PTR(-ESTALE);
	return d_obtain_alias(ubfs_iget(sb, index));
}

static struct dentry *ubfs_fh_to_dentry(struct super_block *sb, struct fid *fid,
					int fh_len, int fh_type)
{
	if ((fh_type != UBFS_FILEID_INO64_GEN &&
	     fh_type != UBFS_FILEID_INO64_GEN_PARENT) || fh_len < UBFS_FH_WORDS)
		return NULL;
	return ubfs_fh_dentry(sb, fid->raw);
}

static struct dentry *ubfs_fh_to_parent(struct super_block *sb, struct fid *fid,
					int fh_len, int fh_type)
{
	if (fh_type != UBFS_FILEID_INO64_GEN_PARENT ||
	    fh_len < UBFS_FH_WORDS_PARENT)
		return NULL;
	return ubfs_fh_dentry(sb, fid->raw + UBFS_FH_WORDS);
}

static struct dentry *ubfs_get_parent(struct dentry *child)
{
	struct inode *dir = d_inode(child);
	struct inode *parent;

	parent = ubfs_iget(dir->i_sb, ub_inode_parent(&UBFS_I(dir)->info));
	if (!IS_ERR(parent) && !S_ISDIR(parent->i_mode)) {
		/* the reader checks the index, not what it names */
		ubfs_err(dir->i_sb, "directory inode %lu: parent is not a directory",
			 dir->i_ino);
		iput(parent);
		return ERR_PTR(-EUCLEAN);
	}
	return d_obtain_alias(parent);
}

const struct export_operations ubfs_export_ops = {
	.encode_fh	= ubfs_encode_fh,
	.fh_to_dentry	= ubfs_fh_to_dentry,
	.fh_to_parent	= ubfs_fh_to_parent,
	.get_parent	= ubfs_get_parent,
};
