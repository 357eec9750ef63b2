// SPDX-License-Identifier: GPL-2.0-only
/*
 * The blob: opened once at mount and read through its own page cache, one
 * page per reader access.  Nothing is copied or preloaded, so mounting costs
 * the same for ten inodes or ten million, and the pages are shared with
 * every other reader of the blob file and reclaimed like any file data.
 */
#include <linux/pagemap.h>
#include <linux/highmem.h>
#include <linux/shmem_fs.h>
#include <linux/fsverity.h>
#include <linux/namei.h>
#include "internal.h"

/* Blob pages are 4096 bytes; PAGE_SIZE may be larger (arm64 64K). */
#define UBFS_BLOB_SHIFT		UB_BLOCK_SIZE_LOG2

/*
 * A cold blob would otherwise cost one synchronous read per metadata page:
 * read ahead around a page that is not cached yet, as a file read would.
 */
#define UBFS_BLOB_RA_PAGES	32

static void ubfs_blob_readahead(struct file *file, pgoff_t index)
{
	struct address_space *mapping = file->f_mapping;
	loff_t pos = (loff_t)index << PAGE_SHIFT;

	if (filemap_range_has_page(mapping, pos, pos + PAGE_SIZE - 1))
		return;
	/* f_ra is shared by all readers of the mount: racy by design, as for any file. */
	page_cache_sync_readahead(mapping, &file->f_ra, file, index,
				  UBFS_BLOB_RA_PAGES);
}

static const void *ubfs_get_page(void *ctx, u64 index, void **cookie)
{
	struct ubfs_sb_info *sbi = ctx;
	struct address_space *mapping = sbi->blob_file->f_mapping;
	u64 pos = index << UBFS_BLOB_SHIFT;
	pgoff_t pgidx = pos >> PAGE_SHIFT;
	struct page *page;

	if (index >= (U64_MAX >> UBFS_BLOB_SHIFT) || (pos >> PAGE_SHIFT) != pgidx)
		return NULL;

	if (shmem_mapping(mapping)) {
		/* tmpfs has no ->read_folio; this is its page cache read. */
		page = shmem_read_mapping_page(mapping, pgidx);
		if (IS_ERR(page))
			return NULL;
	} else {
		struct folio *folio;

		ubfs_blob_readahead(sbi->blob_file, pgidx);
		folio = read_mapping_folio(mapping, pgidx, sbi->blob_file);
		if (IS_ERR(folio))
			return NULL;
		page = folio_file_page(folio, pgidx);
	}
	*cookie = page;
	/*
	 * kmap() rather than kmap_local_page(): the reader keeps a directory
	 * chunk mapped while readdir's callback copies to user space and may
	 * map other pages, so mappings are not released in LIFO order.  On
	 * 64-bit both are page_address().
	 */
	return kmap(page) + offset_in_page(pos);
}

static void ubfs_put_page(void *ctx, void *cookie)
{
	struct page *page = cookie;

	kunmap(page);
	put_page(page);
}

int ubfs_reader_error(struct super_block *sb, int err, const char *what, u64 index)
{
	switch (err) {
	case -EUCLEAN:
		ubfs_err(sb, "corrupt blob: %s (inode index %llu)", what, index);
		break;
	case -EIO:
		ubfs_err(sb, "I/O error reading the blob: %s (inode index %llu)", what, index);
		break;
	case -EINVAL:
		/* The reader's "does not apply": for a checked inode, corruption. */
		ubfs_err(sb, "inconsistent blob: %s (inode index %llu)", what, index);
		err = -EUCLEAN;
		break;
	}
	return err;
}

static int ubfs_check_blob_file(struct fs_context *fc, struct file *file,
				const char *name)
{
	struct address_space *mapping = file->f_mapping;

	if (!S_ISREG(file_inode(file)->i_mode))
		return invalfc(fc, "blob %s is not a regular file", name);
	if (!shmem_mapping(mapping) &&
	    (!mapping->a_ops || !mapping->a_ops->read_folio))
		/* e.g. a blob on overlayfs: it has no page cache of its own */
		return invalfc(fc, "blob's filesystem (%s) has no page cache to read it through",
			       file_inode(file)->i_sb->s_type->name);
	return 0;
}

/*
 * digest= pins the blob.  With fs-verity on the blob file the kernel already
 * knows its digest (6.4+), otherwise we hash the blob once, here.
 */
static int ubfs_check_blob_digest(struct fs_context *fc, struct ubfs_sb_info *sbi)
{
	u8 got[UB_DIGEST_SIZE];
	bool measured;
	int err;

	err = ubfs_file_verity_digest(sbi->blob_file, got, &measured);
	if (err) {
		errorfc(fc, "cannot compute the blob's fs-verity digest: %d", err);
		return err;
	}
	if (memcmp(got, sbi->digest, UB_DIGEST_SIZE)) {
		errorfc(fc, "blob %s: fs-verity digest %*phN does not match digest=",
			sbi->blob_name, UB_DIGEST_SIZE, got);
		return -EINVAL;
	}
	pr_debug("unionblob: blob digest checked (%s)\n",
		 measured ? "fs-verity" : "computed");
	return 0;
}

int ubfs_blob_open(struct super_block *sb, struct ubfs_sb_info *sbi,
		   struct fs_context *fc)
{
	struct file *file;
	struct path path;
	int err;

	/*
	 * Looked up and checked before it is opened: opening a FIFO would
	 * block the mount, and opening a device can do things (rewind a tape).
	 */
	err = kern_path(sbi->blob_name, LOOKUP_FOLLOW, &path);
	if (err) {
		errorfc(fc, "cannot open blob %s: %d", sbi->blob_name, err);
		return err;
	}
	if (!d_is_reg(path.dentry)) {
		path_put(&path);
		return invalfc(fc, "blob %s is not a regular file", sbi->blob_name);
	}
	file = dentry_open(&path, O_RDONLY | O_LARGEFILE, current_cred());
	path_put(&path);
	if (IS_ERR(file)) {
		errorfc(fc, "cannot open blob %s: %ld", sbi->blob_name, PTR_ERR(file));
		return PTR_ERR(file);
	}
	err = ubfs_check_blob_file(fc, file, sbi->blob_name);
	if (err) {
		fput(file);
		return err;
	}
	/*
	 * The blob must not change under a mount: the reader rechecks what it
	 * reads, but a digest= checked at mount would mean nothing.
	 */
	err = deny_write_access(file);
	if (err) {
		fput(file);
		return invalfc(fc, "blob %s is open for writing", sbi->blob_name);
	}
	sbi->blob_file = file;

	sbi->blob.size = i_size_read(file_inode(file));
	sbi->blob.get_page = ubfs_get_page;
	sbi->blob.put_page = ubfs_put_page;
	sbi->blob.ctx = sbi;

	if (sbi->has_digest) {
		err = ubfs_check_blob_digest(fc, sbi);
		if (err)
			return err;
	}

	/* errorfc() reaches the kernel log for mount(2), the caller for fsconfig */
	err = ub_open(&sbi->blob, 0);
	if (err == -EINVAL && sbi->blob.version_major != UB_VERSION_MAJOR) {
		errorfc(fc, "%s: unionblob format version %u: %s (this module reads version %u)",
			sbi->blob_name, sbi->blob.version_major,
			sbi->blob.version_major < UB_VERSION_MAJOR ?
			"rebuild the blob with this cfs" : "too new for this module",
			UB_VERSION_MAJOR);
		return -EINVAL;
	}
	if (err) {
		errorfc(fc, "%s is not a valid unionblob v%u blob (%s, %d)", sbi->blob_name, UB_VERSION_MAJOR,
			err == -EUCLEAN ? "corrupt" :
			err == -EIO ? "I/O error" : "unsupported", err);
		return err == -EIO ? -EIO : -EINVAL;
	}
	return 0;
}

void ubfs_blob_close(struct ubfs_sb_info *sbi)
{
	if (!sbi->blob_file)
		return;
	allow_write_access(sbi->blob_file);
	fput(sbi->blob_file);
	sbi->blob_file = NULL;
}
