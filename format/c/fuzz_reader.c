// SPDX-License-Identifier: Apache-2.0
/*
 * libFuzzer target for ubreader: open the input as a blob and touch
 * everything a mounted filesystem would: readdir of every reachable
 * directory (in small pieces, resuming from positions), lookup of every
 * name found, read_inode, the dtype check, inline data, digests and object
 * paths, listxattr/getxattr with and without overlay escaping.
 *
 * The input is padded to whole pages and its header's blob_size is patched
 * to match, and the header CRC is not checked: otherwise almost every
 * mutation would stop at ub_open() and the fuzzer would learn nothing.
 * Work is bounded (steps, queue length) so no input can time out.
 *
 *   make -C format/c fuzz && build/fuzz_reader -max_len=65536 CORPUS_DIR
 */
#include <stdlib.h>

#include "ubreader.h"

#define MAX_STEPS	4096	/* directory entries visited per input */
#define MAX_QUEUE	256	/* directories waiting to be listed */

static const void *mem_get_page(void *ctx, u64 index, void **cookie)
{
	*cookie = (void *)(uintptr_t)index;
	return (const u8 *)ctx + (index << UB_BLOCK_SIZE_LOG2);
}

static void mem_put_page(void *ctx, void *cookie)
{
	(void)ctx;
	(void)cookie;
}

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

	for (flags = 0; flags <= UB_XATTR_ESCAPE_OVERLAY; flags++) {
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
	struct ub_blob b = { 0 };
	size_t padded;
	u8 *mem;
	u64 le;

	if (size < UB_HEADER_SIZE || size > (64u << 20))
		return 0;
	padded = (size + UB_BLOCK_SIZE - 1) & ~(size_t)(UB_BLOCK_SIZE - 1);
	mem = calloc(1, padded);
	if (!mem)
		return 0;
	memcpy(mem, data, size);
	le = htole64(padded);
	memcpy(mem + __builtin_offsetof(struct ub_super, blob_size), &le, sizeof(le));

	b.size = padded;
	b.get_page = mem_get_page;
	b.put_page = mem_put_page;
	b.ctx = mem;
	if (ub_open(&b, UB_OPEN_NO_CRC) == 0) {
		walk(&b);
		for (unsigned int id = 0; id < UB_SECT_NR_V1; id++)
			ub_check_section_crc(&b, id);
	}
	free(mem);
	return 0;
}
