// SPDX-License-Identifier: GPL-2.0-only
/*
 * readdir.  Positions are the blob's own (SPEC §5: 0 ".", 1 "..", then
 * 2 + block * 4096 + entry * 8), so they stay valid for the life of the blob:
 * telldir/seekdir and a getdents resumed after a full buffer land on the
 * same entry, and a position between entries resumes at the next one.
 */
#include "internal.h"

static int ubfs_filldir(void *arg, const struct ub_dirent_info *de)
{
	struct dir_context *ctx = arg;

	/*
	 * Set before emitting: getdents reports the previous entry's d_off as
	 * ctx->pos when the next one is emitted, i.e. "resume here".
	 */
	ctx->pos = de->pos;
	return !dir_emit(ctx, de->name, de->name_len,
			 ub_index_to_st_ino(de->ino), de->dtype);
}

static int ubfs_iterate(struct file *file, struct dir_context *ctx)
{
	struct inode *dir = file_inode(file);
	u64 pos;
	int err;

	if (!dir_emit_dots(file, ctx))
		return 0;
	pos = ctx->pos;
	err = ub_readdir(UBFS_BLOB(dir), &UBFS_I(dir)->info, &pos,
			 ubfs_filldir, ctx);
	/* On error pos names the failing entry: a retry fails again, no loop. */
	ctx->pos = pos;
	if (err)
		return ubfs_reader_error(dir->i_sb, err, "readdir",
					 UBFS_I(dir)->info.index);
	return 0;
}

const struct file_operations ubfs_dir_fops = {
	.llseek		= generic_file_llseek,
	.read		= generic_read_dir,
	.iterate_shared	= ubfs_iterate,
};
