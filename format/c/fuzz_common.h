/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared by the libFuzzer targets: present the fuzzer's input as a blob in
 * memory.  The input is padded to whole pages in one reused buffer (no
 * allocation per run: real seeds are ~750 KiB and a fresh calloc per run
 * costs more than the walk), and the header's blob_size is patched to the
 * padded size; the reused buffer's tail is poisoned so ASan still catches a
 * read past the blob, and asking for a page past the end aborts (the reader
 * must check offsets before it asks).  The header CRC is not checked: otherwise almost every
 * mutation would stop at ub_open() and the fuzzer would learn nothing.
 */
#ifndef UB_FUZZ_COMMON_H
#define UB_FUZZ_COMMON_H

#include <stdlib.h>
#include <sanitizer/asan_interface.h>

#include "ubreader.h"

#define UB_FUZZ_MAX_INPUT	(64u << 20)

struct fz_mem {
	u8 *mem;
	u64 pages;
};

static const void *fz_get_page(void *ctx, u64 index, void **cookie)
{
	const struct fz_mem *m = ctx;

	if (index >= m->pages)
		abort();
	*cookie = (void *)(uintptr_t)index;
	return m->mem + (index << UB_BLOCK_SIZE_LOG2);
}

static void fz_put_page(void *ctx, void *cookie)
{
	(void)ctx;
	(void)cookie;
}

/* 0 and *b ready to ub_open(), or -1 (input too small or too large). */
static int fz_blob_from_input(const u8 *data, size_t size, struct ub_blob *b)
{
	static struct fz_mem m;
	static size_t cap;
	size_t padded;
	u64 le;

	if (size < UB_HEADER_SIZE || size > UB_FUZZ_MAX_INPUT)
		return -1;
	padded = (size + UB_BLOCK_SIZE - 1) & ~(size_t)(UB_BLOCK_SIZE - 1);
	if (padded > cap) {
		free(m.mem);
		m.mem = malloc(padded);
		if (!m.mem)
			abort();
		cap = padded;
	}
	ASAN_UNPOISON_MEMORY_REGION(m.mem, cap);
	ASAN_POISON_MEMORY_REGION(m.mem + padded, cap - padded);
	m.pages = padded >> UB_BLOCK_SIZE_LOG2;
	memcpy(m.mem, data, size);
	memset(m.mem + size, 0, padded - size);
	le = htole64(padded);
	memcpy(m.mem + __builtin_offsetof(struct ub_super, blob_size), &le, sizeof(le));

	memset(b, 0, sizeof(*b));
	b->size = padded;
	b->get_page = fz_get_page;
	b->put_page = fz_put_page;
	b->ctx = &m;
	return 0;
}

#endif
