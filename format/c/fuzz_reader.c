// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for ubreader: open the input as a blob and touch
 * everything a mounted filesystem would: readdir of every reachable
 * directory (in small pieces, resuming from positions), lookup of every
 * name found, read_inode, the dtype check, inline data, digests and object
 * paths, listxattr/getxattr with and without overlay escaping.
 *
 * The input becomes a blob as fuzz_common.h says (CRC not checked).
 * Work is bounded (steps, queue length) so no input can time out.
 * fuzz_ops.c covers what callers choose: arbitrary inode numbers,
 * positions, names and offsets.
 *
 *   make -C format/c fuzz && build/fuzz_reader -max_len=1048576 CORPUS_DIR
 */
#include "fuzz_common.h"

#define MAX_STEPS	512	/* directory entries visited per input: the cost of a run */
#define CRC_MAX_SIZE	(128u << 10)	/* ub_check_section_crc() on inputs up to this size */
#define MAX_QUEUE	256	/* directories waiting to be listed */

struct fz {
	const struct ub_blob *b;
	const struct ub_inode_info *dir;
	u64 queue[MAX_QUEUE];
	unsigned int nqueue;
	unsigned int steps;
	unsigned int emitted;	/* in the current readdir call */
};

static void poke_xattrs(const struct ub_blob *b, const struct ub_inode_info *i)
{
	static char list[1 << 16];
	static u8 value[UB_XATTR_VALUE_MAX];
	unsigned int flags;

	for (flags = 0; flags <= (UB_XATTR_ESCAPE_OVERLAY | UB_XATTR_HIDE_TRUSTED | UB_XATTR_HIDE_UNREADABLE_USER); flags++) {
		long n = ub_listxattr(b, i, flags, NULL, 0);
		long m, off;

		if (n <= 0 || n > (long)sizeof(list))
			continue;
		m = ub_listxattr(b, i, flags, list, (size_t)n);
		if (m != n)
			abort();	/* same set, same answer */
		for (off = 0; off < m;) {
			size_t len = strlen(list + off);
			int v = ub_getxattr(b, i, flags, list + off, len, NULL, 0);

			/* every listed name is gettable, escaped or not */
			if (v < 0)
				abort();
			if (v > 0)
				ub_getxattr(b, i, flags, list + off, len, value, (size_t)v);
			off += (long)len + 1;
		}
		ub_listxattr(b, i, flags, list, 1);	/* -ERANGE path */
	}
	ub_getxattr(b, i, UB_XATTR_ESCAPE_OVERLAY, "trusted.overlay.opaque", 22, value, 1);
}

/* The kernel's listxattr path: iterate, copy each name and value directly. */
static void iterate_xattrs(const struct ub_blob *b, const struct ub_inode_info *i)
{
	static u8 value[UB_XATTR_VALUE_MAX];
	char name[UB_XATTR_OVERLAY_ESCAPED_LEN + 256];
	struct ub_xattr_iter it;
	struct ub_xattr x;

	if (ub_xattr_iter_init(b, i, &it))
		return;
	while (ub_xattr_next(&it, &x) == 1) {
		if (ub_xattr_copy_name(b, &x, UB_XATTR_ESCAPE_OVERLAY, name, sizeof(name)) < 0 ||
		    ub_xattr_copy_name(b, &x, 0, name, sizeof(name)) != (int)x.name_len)
			abort();	/* an entry ub_xattr_next() accepted fits */
		ub_xattr_copy_name(b, &x, 0, name, x.name_len / 2);	/* -ERANGE */
		if (ub_xattr_copy_value(b, &x, value, sizeof(value)) != (int)x.value_len)
			abort();
		ub_xattr_copy_value(b, &x, value, x.value_len / 2);
	}
}

static void poke_inode(const struct ub_blob *b, const struct ub_inode_info *i)
{
	u8 buf[UB_INLINE_MAX], digest[UB_DIGEST_SIZE];
	char path[UB_OBJECT_PATH_LEN];

	if (ub_inode_is_inline(i)) {
		ub_read_data(b, i, 0, buf, sizeof(buf));
		ub_read_data(b, i, i->size / 2, buf, 7);
		ub_read_data(b, i, i->size + 1, buf, 7);
		ub_readlink(b, i, (char *)buf, sizeof(buf));
	}
	if (ub_get_digest(b, i, digest) == 0)
		ub_object_path(digest, path);
	(void)ub_inode_rdev_major(i);
	(void)ub_inode_rdev_minor(i);
	poke_xattrs(b, i);
	iterate_xattrs(b, i);
}

/* Called for each entry: look it up again, read it, queue directories. */
static int visit(void *arg, const struct ub_dirent_info *de)
{
	struct fz *f = arg;
	struct ub_inode_info child;
	u64 ino;
	unsigned int dtype;

	/* stop every few entries so readdir resumes from positions */
	if (f->emitted++ == 3 || f->steps >= MAX_STEPS)
		return 1;
	f->steps++;
	/* "." and ".." must resolve to what readdir said */
	if (de->pos < UB_DIRPOS_FIRST &&
	    (ub_lookup(f->b, f->dir, de->name, de->name_len, &ino, &dtype) ||
	     ino != de->ino || dtype != de->dtype))
		abort();
	if (ub_lookup_inode(f->b, f->dir, de->name, de->name_len, &child) == 0) {
		poke_inode(f->b, &child);
		if (ub_inode_is_dir(&child) && de->pos >= UB_DIRPOS_FIRST &&
		    f->nqueue < MAX_QUEUE)
			f->queue[f->nqueue++] = child.index;
	}
	return 0;
}

static void walk(const struct ub_blob *b)
{
	struct fz f = { .b = b };
	unsigned int head = 0;

	f.queue[f.nqueue++] = b->root_ino;
	while (head < f.nqueue && f.steps < MAX_STEPS) {
		struct ub_inode_info dir;
		u64 pos = 0, last = ~0ull;

		if (ub_read_inode(b, f.queue[head++], &dir))
			continue;
		poke_inode(b, &dir);
		f.dir = &dir;
		/* resume until the end, an error, or no progress */
		while (pos != last && f.steps < MAX_STEPS) {
			last = pos;
			f.emitted = 0;
			if (ub_readdir(b, &dir, &pos, visit, &f))
				break;
		}
		/* odd positions: inside entries and past the end */
		pos = UB_DIRPOS_FIRST + 3;
		f.emitted = 0;
		ub_readdir(b, &dir, &pos, visit, &f);
		ub_lookup(b, &dir, "zzzz", 4, &pos, &f.emitted);
	}
}

int LLVMFuzzerTestOneInput(const u8 *data, size_t size)
{
	struct ub_blob b;

	if (fz_blob_from_input(data, size, &b))
		return 0;
	if (ub_open(&b, UB_OPEN_NO_CRC) == 0) {
		walk(&b);
		/* fsck's path; on a real 750 KiB blob it would triple the time of a run */
		for (unsigned int id = 0; size <= CRC_MAX_SIZE && id < UB_SECT_NR_V1; id++)
			ub_check_section_crc(&b, id);
	}
	return 0;
}
