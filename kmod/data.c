// SPDX-License-Identifier: GPL-2.0-only
/*
 * File data.
 *
 * External files: open finds the object under one of the basedir stores
 * by its digest path and opens it; reads, splices, mmaps and seeks are
 * handed to that file, as overlayfs does.  An mmap is moved to the object
 * (the vma's file becomes the object), so the pages mapped are the object's
 * page cache pages: every mount of every blob naming the object shares them.
 *
 * Inline files and symlinks: a page of our own page cache, filled from the
 * blob (an item is at most 4096 bytes and never crosses a blob page).
 */
#include <linux/pagemap.h>
#include <linux/highmem.h>
#include <linux/namei.h>
#include <linux/file.h>
#include <linux/mm.h>
#include <linux/uio.h>
#include "internal.h"
#ifdef UBFS_HAVE_BACKING_FILE
#include <linux/backing-file.h>
#endif

/* ---- inline data ------------------------------------------------------- */

static int ubfs_read_inline_folio(struct file *file, struct folio *folio)
{
	struct inode *inode = folio->mapping->host;
	const struct ub_inode_info *info = &UBFS_I(inode)->info;
	int ret = 0;

	if (folio_pos(folio) == 0 && info->size) {
		/* The item fits in the first page (<= 4096 bytes). */
		void *kaddr = kmap_local_folio(folio, 0);

		ret = ub_read_data(UBFS_BLOB(inode), info, 0, kaddr, PAGE_SIZE);
		/*
		 * A NUL would cut the target short where ub_readlink() (FUSE, fsck)
		 * refuses it: corrupt, as SPEC §4 says.
		 */
		if (ret > 0 && S_ISLNK(inode->i_mode) && memchr(kaddr, 0, ret))
			ret = -EUCLEAN;
		if (ret >= 0)
			memset(kaddr + ret, 0, PAGE_SIZE - ret);
		kunmap_local(kaddr);
		if (ret >= 0 && folio_size(folio) > PAGE_SIZE)
			folio_zero_segment(folio, PAGE_SIZE, folio_size(folio));
	} else {
		folio_zero_segment(folio, 0, folio_size(folio));
	}

	if (ret < 0) {
		ret = ubfs_reader_error(inode->i_sb, ret, "reading inline data",
					info->index);
	} else {
		ret = 0;
		folio_mark_uptodate(folio);
	}
	folio_unlock(folio);
	return ret;
}

const struct address_space_operations ubfs_inline_aops = {
	.read_folio	= ubfs_read_inline_folio,
};

/*
 * O_DIRECT on an inline file (at most a page, inside the blob) is served
 * from the page cache, as tmpfs does: there is no device to go direct to,
 * and refusing the open (EINVAL) would break readers that ask for it on
 * every file, as they may on ext4.
 */
static int ubfs_open_inline(struct inode *inode, struct file *file)
{
	file->f_mode |= FMODE_CAN_ODIRECT;
	return 0;
}

static ssize_t ubfs_read_inline_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	iocb->ki_flags &= ~IOCB_DIRECT;
	return generic_file_read_iter(iocb, iter);
}

const struct file_operations ubfs_inline_fops = {
	.open		= ubfs_open_inline,
	.llseek		= generic_file_llseek,
	.read_iter	= ubfs_read_inline_iter,
	.mmap		= generic_file_readonly_mmap,
	.splice_read	= ubfs_generic_splice_read,
};

/* ---- finding the object ------------------------------------------------ */

#define UBFS_OBJ_PREFIX		"objects/"
#define UBFS_OBJ_PREFIX_LEN	8

/*
 * Look the object up under each store in turn.  The walk is confined to the
 * store (LOOKUP_BENEATH) and follows no symlink at all, so a planted link
 * cannot send us out of the basedir.  A store where the name is missing, a
 * symlink or not a regular file is skipped; so is one whose lookup fails
 * otherwise (EIO, EACCES): the object is named by its content, so any
 * store's copy will do, as mergerfs moves on to the next branch.  The first
 * such error is returned when no store has the object.
 */
static int ubfs_find_object(struct ubfs_sb_info *sbi, const char *rel,
			    struct path *path)
{
	unsigned int flags = LOOKUP_BENEATH | LOOKUP_NO_SYMLINKS |
			     LOOKUP_NO_MAGICLINKS;
	int first_err = 0;
	unsigned int i;

	for (i = 0; i < sbi->nr_stores; i++) {
		struct path *store = &sbi->stores[i];
		int err;

		if (fatal_signal_pending(current))
			return -EINTR;
		err = vfs_path_lookup(store->dentry, store->mnt, rel, flags, path);
		if (err == -ENOENT || err == -ELOOP || err == -ENOTDIR ||
		    err == -EXDEV)
			continue;
		if (err) {
			if (!first_err)
				first_err = err;
			continue;
		}
		if (d_is_reg(path->dentry))
			return 0;
		path_put(path);
	}
	return first_err ? first_err : -ENOENT;
}

static struct file *ubfs_open_real(struct file *file, const struct path *real,
				   const struct cred *creds)
{
	int flags = O_RDONLY | O_LARGEFILE | (file->f_flags & O_DIRECT);

#ifdef UBFS_HAVE_BACKING_FILE
	/* FMODE_BACKING file; the user's path is kept for /proc/PID/maps. */
	return backing_file_open(file, flags, real, creds);
#else
	/*
	 * dentry_open() of the real path, not open_with_fake_path(): with
	 * overlayfs on top, a fake path would make ext4 ask overlay for the
	 * real dentry of its own file.
	 */
	return dentry_open(real, flags, creds);
#endif
}

/* "objects/XX/YYYY..." of an inode's object, for lookups and log lines. */
static int ubfs_object_rel(struct inode *inode, u8 digest[UB_DIGEST_SIZE],
			   char rel[UBFS_OBJ_PREFIX_LEN + UB_OBJECT_PATH_LEN])
{
	const struct ub_inode_info *info = &UBFS_I(inode)->info;
	int err;

	err = ub_get_digest(UBFS_BLOB(inode), info, digest);
	if (err)
		return ubfs_reader_error(inode->i_sb, err, "object digest", info->index);
	memcpy(rel, UBFS_OBJ_PREFIX, UBFS_OBJ_PREFIX_LEN);
	ub_object_path(digest, rel + UBFS_OBJ_PREFIX_LEN);
	return 0;
}

static int ubfs_open_external(struct inode *inode, struct file *file)
{
	struct ubfs_sb_info *sbi = UBFS_SB(inode->i_sb);
	struct ubfs_inode *ui = UBFS_I(inode);
	char rel[UBFS_OBJ_PREFIX_LEN + UB_OBJECT_PATH_LEN] = "";
	u8 digest[UB_DIGEST_SIZE];
	const struct cred *old_cred;
	struct file *realfile;
	struct path realpath;
	int err;

	if (file->f_mode & FMODE_WRITE)
		return -EROFS;

	/* An earlier open found the object: no digest to read, no store lookup. */
	spin_lock(&inode->i_lock);
	realpath = ui->object;
	path_get(&realpath);
	spin_unlock(&inode->i_lock);

	if (!realpath.dentry || sbi->verity != UBFS_VERITY_OFF) {
		err = ubfs_object_rel(inode, digest, rel);
		if (err) {
			path_put(&realpath);
			return err;
		}
	}

	/* The mounter's credentials: readers need no rights on the store. */
	old_cred = override_creds(sbi->creds);
	err = realpath.dentry ? 0 : ubfs_find_object(sbi, rel, &realpath);
	if (!err)
		realfile = ubfs_open_real(file, &realpath, sbi->creds);
	revert_creds(old_cred);
	if (err) {
		ubfs_err(inode->i_sb, "object %s (inode %lu) not in any store: %d",
			 rel, inode->i_ino, err);
		return -EIO;
	}
	if (IS_ERR(realfile)) {
		path_put(&realpath);
		return PTR_ERR(realfile);
	}

	if (i_size_read(file_inode(realfile)) != inode->i_size) {
		if (!rel[0] && ubfs_object_rel(inode, digest, rel))
			strscpy(rel, "?", sizeof(rel));
		ubfs_err(inode->i_sb, "object %s has size %lld, the blob says %lld",
			 rel, i_size_read(file_inode(realfile)), inode->i_size);
		err = -EIO;
		goto fail;
	}
	/* Read as the mounter too: an opener confined by an LSM may not read the store. */
	old_cred = override_creds(sbi->creds);
	err = ubfs_verify_object(inode, realfile, digest);
	revert_creds(old_cred);
	if (err)
		goto fail;

	/* Remember the object (the first opener to get here wins). */
	spin_lock(&inode->i_lock);
	if (!ui->object.dentry) {
		ui->object = realpath;
		realpath = (struct path){};
	}
	spin_unlock(&inode->i_lock);
	path_put(&realpath);

	file->private_data = realfile;
	file->f_mode |= realfile->f_mode & FMODE_CAN_ODIRECT;
	return 0;
fail:
	fput(realfile);
	path_put(&realpath);
	return err;
}

static int ubfs_release_external(struct inode *inode, struct file *file)
{
	fput(file->private_data);
	return 0;
}

/* ---- delegation to the object ------------------------------------------ */

/*
 * O_DIRECT of our file may have changed since open (fcntl F_SETFL): the
 * object file follows before each read, as overlayfs's real files do, so
 * reads are direct exactly when the user's file says so.
 */
static int ubfs_sync_odirect(struct file *file)
{
	struct file *real = file->private_data;
	unsigned int want = file->f_flags & O_DIRECT;

	if ((READ_ONCE(real->f_flags) & O_DIRECT) == want)
		return 0;
	if (want && !(real->f_mode & FMODE_CAN_ODIRECT))
		return -EINVAL;
	spin_lock(&real->f_lock);
	real->f_flags = (real->f_flags & ~O_DIRECT) | want;
	/* what a kiocb of the file starts from (init_sync_kiocb), as setfl() refreshes it */
	real->f_iocb_flags = iocb_flags(real);
	spin_unlock(&real->f_lock);
	return 0;
}

#ifdef UBFS_HAVE_BACKING_FILE
static void ubfs_backing_ctx(struct file *file, struct backing_file_ctx *ctx)
{
	*ctx = (struct backing_file_ctx) {
		.cred = UBFS_SB(file_inode(file)->i_sb)->creds,
		.user_file = file,
	};
}

static ssize_t ubfs_read_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	struct backing_file_ctx ctx;
	int err = ubfs_sync_odirect(iocb->ki_filp);

	if (err)
		return err;
	ubfs_backing_ctx(iocb->ki_filp, &ctx);
	return backing_file_read_iter(iocb->ki_filp->private_data, iter, iocb,
				      iocb->ki_flags, &ctx);
}

static ssize_t ubfs_splice_read(struct file *in, loff_t *ppos,
				struct pipe_inode_info *pipe, size_t len,
				unsigned int flags)
{
	struct backing_file_ctx ctx;

	ubfs_backing_ctx(in, &ctx);
	return backing_file_splice_read(in->private_data, ppos, pipe, len,
					flags, &ctx);
}

static int ubfs_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct backing_file_ctx ctx;

	ubfs_backing_ctx(file, &ctx);
	return backing_file_mmap(file->private_data, vma, &ctx);
}

#else /* !UBFS_HAVE_BACKING_FILE: 6.1 */

/* iocb_to_rw_flags() is private there; map what a read can carry. */
static rwf_t ubfs_iocb_rwf(const struct kiocb *iocb)
{
	rwf_t rwf = 0;

	if (iocb->ki_flags & IOCB_NOWAIT)
		rwf |= RWF_NOWAIT;
	if (iocb->ki_flags & IOCB_HIPRI)
		rwf |= RWF_HIPRI;
	return rwf;
}

/* Async kiocbs are served synchronously: a read-only image needs no more. */
static ssize_t ubfs_read_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	struct file *file = iocb->ki_filp;
	const struct cred *old_cred;
	ssize_t ret;

	if (!iov_iter_count(iter))
		return 0;
	ret = ubfs_sync_odirect(file);
	if (ret)
		return ret;
	old_cred = override_creds(UBFS_SB(file_inode(file)->i_sb)->creds);
	ret = vfs_iter_read(file->private_data, iter, &iocb->ki_pos,
			    ubfs_iocb_rwf(iocb));
	revert_creds(old_cred);
	return ret;
}

/*
 * Goes through ubfs_read_iter(), i.e. through the object's page cache (not
 * through ours, which external files leave empty: hence not filemap's).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define ubfs_splice_read copy_splice_read
#else
#define ubfs_splice_read generic_file_splice_read
#endif

static int ubfs_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct file *realfile = file->private_data;
	const struct cred *old_cred;
	int ret;

	if (!realfile->f_op->mmap)
		return -ENODEV;
	if (WARN_ON_ONCE(vma->vm_file != file))
		return -EIO;
	vma_set_file(vma, realfile);
	old_cred = override_creds(UBFS_SB(file_inode(file)->i_sb)->creds);
	ret = call_mmap(realfile, vma);
	revert_creds(old_cred);
	return ret;
}
#endif /* UBFS_HAVE_BACKING_FILE */

/* SEEK_DATA/SEEK_HOLE are the object's; the size is the same (checked at open). */
static loff_t ubfs_llseek(struct file *file, loff_t offset, int whence)
{
	struct file *realfile = file->private_data;
	loff_t ret;

	/* f_pos of our file is serialized by the caller; the object file is ours alone. */
	realfile->f_pos = file->f_pos;
	ret = vfs_llseek(realfile, offset, whence);
	file->f_pos = realfile->f_pos;
	return ret;
}

static int ubfs_fadvise(struct file *file, loff_t offset, loff_t len, int advice)
{
	return vfs_fadvise(file->private_data, offset, len, advice);
}

const struct file_operations ubfs_external_fops = {
	.open		= ubfs_open_external,
	.release	= ubfs_release_external,
	.llseek		= ubfs_llseek,
	.read_iter	= ubfs_read_iter,
	.splice_read	= ubfs_splice_read,
	.mmap		= ubfs_mmap,
	.fadvise	= ubfs_fadvise,
};
