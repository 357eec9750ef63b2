// SPDX-License-Identifier: Apache-2.0
/*
 * API test of ubreader on a valid blob: checks the promises of ubreader.h
 * that ubdump does not exercise.
 *
 *   - every get_page() is matched by one put_page() (no page leaks: the
 *     kernel would pin page-cache pages forever);
 *   - readdir: "." and ".." at 0 and 1, positions as SPEC §5, resuming at
 *     every position (also inside entries and past the end), one entry per
 *     call gives the same sequence as one call;
 *   - lookup finds every listed name with the same inode and type, and
 *     misses names that are not there; lookup_inode agrees;
 *   - read_data in pieces equals read_data at once; digests and object paths;
 *   - listxattr/getxattr sizes, -ERANGE, -ENODATA, and the overlay escaping.
 *
 *   test_reader BLOB...   exit 0 ok, 3 on the first failed expectation
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ubreader.h"

static const char *blob_path;
static long mapped;		/* get_page minus put_page */
static u64 npages;

#define EXPECT(cond, ...) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "test_reader: %s:%d: %s: ", blob_path,	\
			__LINE__, #cond);				\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		exit(3);						\
	}								\
} while (0)

static const void *get_page(void *ctx, u64 index, void **cookie)
{
	EXPECT(index < npages, "page %llu of %llu", (unsigned long long)index,
	       (unsigned long long)npages);
	mapped++;
	*cookie = (void *)(uintptr_t)(index + 1);
	return (const u8 *)ctx + (index << UB_BLOCK_SIZE_LOG2);
}

static void put_page(void *ctx, void *cookie)
{
	(void)ctx;
	EXPECT(cookie != NULL, "put_page without get_page");
	mapped--;
}

/* ---- readdir ----------------------------------------------------------- */

struct ent {
	char name[UB_NAME_MAX + 1];
	u32 len;
	u64 ino, pos, next_pos;
	unsigned int dtype;
};

struct collect {
	struct ent *v;
	size_t n, cap;
	size_t limit;		/* stop after this many in one call (0: none) */
	size_t in_call;
};

static int collect(void *arg, const struct ub_dirent_info *de)
{
	struct collect *c = arg;
	struct ent *e;

	if (c->limit && c->in_call == c->limit)
		return 1;
	c->in_call++;
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->v = realloc(c->v, c->cap * sizeof(*c->v));
		EXPECT(c->v, "oom");
	}
	e = &c->v[c->n++];
	memcpy(e->name, de->name, de->name_len);
	e->name[de->name_len] = 0;
	e->len = de->name_len;
	e->ino = de->ino;
	e->pos = de->pos;
	e->next_pos = de->next_pos;
	e->dtype = de->dtype;
	return 0;
}

static void list_dir(const struct ub_blob *b, const struct ub_inode_info *d,
		     u64 start, size_t limit, struct collect *c)
{
	u64 pos = start, last;

	c->n = 0;
	c->limit = limit;
	do {
		last = pos;
		c->in_call = 0;
		EXPECT(ub_readdir(b, d, &pos, collect, c) == 0, "readdir");
	} while (limit && pos != last);
}

static bool same_ent(const struct ent *a, const struct ent *b)
{
	return a->len == b->len && !memcmp(a->name, b->name, a->len) &&
	       a->ino == b->ino && a->dtype == b->dtype && a->pos == b->pos &&
	       a->next_pos == b->next_pos;
}

static void test_dir(const struct ub_blob *b, const struct ub_inode_info *d,
		     u64 **queue, size_t *nq, size_t *qcap)
{
	struct collect all = { 0 }, part = { 0 };
	u64 end = ub_dir_end_pos(d);
	size_t i;

	list_dir(b, d, 0, 0, &all);
	EXPECT(all.n >= 2, "no dots");
	EXPECT(all.v[0].pos == 0 && all.v[0].len == 1 && all.v[0].name[0] == '.' &&
	       all.v[0].ino == d->index && all.v[0].dtype == UB_DT_DIR, "bad .");
	EXPECT(all.v[1].pos == 1 && all.v[1].len == 2 && !memcmp(all.v[1].name, "..", 2) &&
	       all.v[1].ino == d->aux, "bad ..");

	/* one entry per call resumes to the same sequence */
	list_dir(b, d, 0, 1, &part);
	EXPECT(part.n == all.n, "chunked readdir: %zu vs %zu", part.n, all.n);
	for (i = 0; i < all.n; i++)
		EXPECT(same_ent(&all.v[i], &part.v[i]), "chunked entry %zu", i);

	for (i = 0; i < all.n; i++) {
		const struct ent *e = &all.v[i];
		struct ub_inode_info child;
		u64 ino, pos;
		unsigned int dtype, k;

		EXPECT(e->next_pos == (i + 1 < all.n ? all.v[i + 1].pos : end),
		       "next_pos of %s", e->name);
		if (i >= 2) {
			EXPECT(e->pos >= UB_DIRPOS_FIRST && ((e->pos - UB_DIRPOS_FIRST) & 7) == 0,
			       "pos %llu", (unsigned long long)e->pos);
			EXPECT(strcmp(all.v[i - 1].name, e->name) < 0 || i == 2, "order");
		}
		/* resuming at the position, and anywhere inside the entry */
		for (k = 0; k < (i >= 2 ? 8u : 1u); k++) {
			pos = e->pos + k;
			part.n = 0;
			part.limit = 1;
			part.in_call = 0;
			EXPECT(ub_readdir(b, d, &pos, collect, &part) == 0, "readdir at pos");
			if (k == 0)
				EXPECT(part.n == 1 && same_ent(&part.v[0], e), "resume at %s", e->name);
			else
				EXPECT(i + 1 < all.n ? part.n == 1 && same_ent(&part.v[0], &all.v[i + 1])
						     : part.n == 0, "resume inside %s +%u", e->name, k);
		}

		EXPECT(ub_lookup(b, d, e->name, e->len, &ino, &dtype) == 0, "lookup %s", e->name);
		EXPECT(ino == e->ino && dtype == e->dtype, "lookup %s ino/type", e->name);
		EXPECT(ub_lookup_inode(b, d, e->name, e->len, &child) == 0, "lookup_inode %s", e->name);
		EXPECT(child.index == e->ino, "lookup_inode index");
		if (i < 2)
			continue;
		/* neighbours of a present name are absent unless listed */
		{
			char probe[UB_NAME_MAX + 2];
			int r;

			memcpy(probe, e->name, e->len);
			probe[e->len] = '\x01';
			r = ub_lookup(b, d, probe, e->len + 1, &ino, &dtype);
			EXPECT(r == -ENOENT || (r == 0 && i + 1 < all.n &&
				all.v[i + 1].len == e->len + 1 &&
				!memcmp(all.v[i + 1].name, probe, e->len + 1)), "probe+ %s", e->name);
			if (e->len > 1) {
				r = ub_lookup(b, d, e->name, e->len - 1, &ino, &dtype);
				EXPECT(r == -ENOENT || r == 0, "probe- %s", e->name);
			}
		}
		if (child.mode && ub_inode_is_dir(&child)) {
			if (*nq == *qcap) {
				*qcap = *qcap ? 2 * *qcap : 64;
				*queue = realloc(*queue, *qcap * sizeof(**queue));
				EXPECT(*queue, "oom");
			}
			(*queue)[(*nq)++] = child.index;
		}
	}
	/* past the end: nothing, and the position stays at the end */
	{
		u64 pos = end + 12345;

		part.n = 0;
		part.limit = 0;
		EXPECT(ub_readdir(b, d, &pos, collect, &part) == 0 && part.n == 0, "past end");
	}
	{
		u64 ino;
		unsigned int dtype;

		EXPECT(ub_lookup(b, d, "", 0, &ino, &dtype) == -ENOENT, "empty name");
		EXPECT(ub_lookup(b, d, "\xff\xff\xff", 3, &ino, &dtype) == -ENOENT ||
		       (all.n > 2 && !strcmp(all.v[all.n - 1].name, "\xff\xff\xff")), "ff name");
	}
	free(all.v);
	free(part.v);
}

/* ---- data, digests ----------------------------------------------------- */

static void test_data(const struct ub_blob *b, const struct ub_inode_info *i)
{
	u8 whole[UB_INLINE_MAX], piece[UB_INLINE_MAX], digest[UB_DIGEST_SIZE];
	char path[UB_OBJECT_PATH_LEN];
	u64 off;
	int n;

	if (ub_inode_is_inline(i)) {
		n = ub_read_data(b, i, 0, whole, sizeof(whole));
		EXPECT(n >= 0 && (u64)n == i->size, "read_data %d", n);
		for (off = 0; off < i->size; off += 7) {
			int m = ub_read_data(b, i, off, piece, 7);

			EXPECT(m == (int)(i->size - off < 7 ? i->size - off : 7), "piece");
			EXPECT(!memcmp(piece, whole + off, m), "piece bytes");
		}
		EXPECT(ub_read_data(b, i, i->size, piece, 10) == 0, "eof");
		EXPECT(ub_read_data(b, i, ~0ull, piece, 10) == 0, "far eof");
		EXPECT(ub_get_digest(b, i, digest) == -EINVAL, "digest of inline");
		if (ub_inode_is_lnk(i)) {
			char target[UB_SYMLINK_MAX + 1];

			EXPECT(ub_readlink(b, i, target, sizeof(target)) == n &&
			       !memcmp(target, whole, n) && target[n] == 0, "readlink");
			EXPECT(ub_readlink(b, i, target, n) == -ERANGE, "readlink ERANGE");
		} else {
			EXPECT(ub_readlink(b, i, (char *)piece, sizeof(piece)) == -EINVAL, "readlink of file");
		}
	} else {
		EXPECT(ub_read_data(b, i, 0, whole, 1) == -EINVAL, "read_data of non-inline");
	}
	if (ub_inode_is_external(i)) {
		EXPECT(ub_get_digest(b, i, digest) == 0, "digest");
		EXPECT(ub_object_path(digest, path) == 65 && path[2] == '/' &&
		       strlen(path) == 65, "object path");
	}
	if (!ub_inode_is_dir(i)) {
		u64 ino;
		unsigned int dtype;
		u64 pos = 0;

		EXPECT(ub_lookup(b, i, "a", 1, &ino, &dtype) == -ENOTDIR, "lookup in non-dir");
		EXPECT(ub_readdir(b, i, &pos, collect, NULL) == -ENOTDIR, "readdir of non-dir");
	}
}

/* ---- xattrs ------------------------------------------------------------ */

static bool starts(const char *s, size_t len, const char *p)
{
	size_t pl = strlen(p);

	return len >= pl && !memcmp(s, p, pl);
}

static void test_xattrs_flags(const struct ub_blob *b, const struct ub_inode_info *i,
			      unsigned int flags)
{
	static char list[1 << 20];
	static u8 val[UB_XATTR_VALUE_MAX + 1];
	long n = ub_listxattr(b, i, flags, NULL, 0), off;

	EXPECT(n >= 0 && n < (long)sizeof(list), "listxattr size %ld", n);
	EXPECT(ub_listxattr(b, i, flags, list, n) == n, "listxattr");
	if (n > 0)
		EXPECT(ub_listxattr(b, i, flags, list, n - 1) == -ERANGE, "listxattr ERANGE");
	EXPECT(ub_listxattr(b, i, flags, list, n) == n, "listxattr again");
	for (off = 0; off < n;) {
		const char *name = list + off;
		size_t len = strlen(name);
		int v = ub_getxattr(b, i, flags, name, len, NULL, 0);

		EXPECT(v >= 0, "getxattr %s size: %d", name, v);
		EXPECT(ub_getxattr(b, i, flags, name, len, val, v + 1) == v, "getxattr %s", name);
		if (v > 1)	/* size 0 would be the size query */
			EXPECT(ub_getxattr(b, i, flags, name, len, val, v - 1) == -ERANGE,
			       "getxattr %s ERANGE", name);
		EXPECT(!(flags & UB_XATTR_HIDE_TRUSTED) || !starts(name, len, "trusted."), "hidden %s listed", name);
		EXPECT(!(flags & UB_XATTR_HIDE_UNREADABLE_USER) || ub_inode_is_reg(i) || ub_inode_is_dir(i) ||
		       !starts(name, len, "user."), "user xattr %s listed on inode %llu of mode %o",
		       name, (unsigned long long)i->index, i->mode);
		if (flags & UB_XATTR_ESCAPE_OVERLAY) {
			/* nothing shown escaped-only: every trusted.overlay.* name is escaped */
			EXPECT(!starts(name, len, "trusted.overlay.") ||
			       starts(name, len, "trusted.overlay.overlay."), "unescaped %s", name);
			if (starts(name, len, "trusted.overlay.overlay.")) {
				/* the unescaped spelling names nothing */
				char raw[300];

				snprintf(raw, sizeof(raw), "trusted.overlay.%s", name + 24);
				EXPECT(ub_getxattr(b, i, flags, raw, strlen(raw), val, sizeof(val)) == -ENODATA ||
				       starts(raw, strlen(raw), "trusted.overlay.overlay."),
				       "escaped-away %s", raw);
			}
		}
		off += (long)len + 1;
	}
	EXPECT(ub_getxattr(b, i, flags, "user.no-such-xattr-here", 23, val, 10) == -ENODATA,
	       "ENODATA");
}

static void test_xattrs(const struct ub_blob *b, const struct ub_inode_info *i)
{
	long plain = ub_listxattr(b, i, 0, NULL, 0);
	long esc = ub_listxattr(b, i, UB_XATTR_ESCAPE_OVERLAY, NULL, 0);
	struct ub_xattr_iter it;
	struct ub_xattr x;
	long overlay = 0;
	int r;

	long hidden = ub_listxattr(b, i, UB_XATTR_ESCAPE_OVERLAY | UB_XATTR_HIDE_TRUSTED, NULL, 0);
	long trusted = 0;

	test_xattrs_flags(b, i, 0);
	test_xattrs_flags(b, i, UB_XATTR_ESCAPE_OVERLAY);
	test_xattrs_flags(b, i, UB_XATTR_ESCAPE_OVERLAY | UB_XATTR_HIDE_TRUSTED);
	test_xattrs_flags(b, i, UB_XATTR_ESCAPE_OVERLAY | UB_XATTR_HIDE_UNREADABLE_USER);
	EXPECT(ub_xattr_iter_init(b, i, &it) == 0, "iter");
	while ((r = ub_xattr_next(&it, &x)) > 0) {
		overlay += x.overlay;
		if (x.prefix_len == 8 && !memcmp(x.prefix, "trusted.", 8))
			trusted += ub_xattr_name_len(&x, UB_XATTR_ESCAPE_OVERLAY) + 1;
	}
	EXPECT(r == 0, "iter end");
	/* escaping lengthens each overlay name by "overlay." */
	EXPECT(esc == plain + 8 * overlay, "escaped list size %ld vs %ld + 8 * %ld", esc, plain, overlay);
	/* hiding trusted.* leaves the list without exactly those names */
	EXPECT(hidden == esc - trusted, "list without trusted.*: %ld vs %ld - %ld", hidden, esc, trusted);
}

/* ---- driver ------------------------------------------------------------ */

static void test_blob(const char *path)
{
	struct ub_blob b = { 0 };
	struct ub_inode_info i;
	u64 *queue = NULL, k;
	size_t nq = 0, qcap = 0, head;
	struct stat st;
	void *map;
	int fd;

	blob_path = path;
	fd = open(path, O_RDONLY);
	EXPECT(fd >= 0 && fstat(fd, &st) == 0, "open");
	map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	EXPECT(map != MAP_FAILED, "mmap");
	close(fd);
	npages = st.st_size >> UB_BLOCK_SIZE_LOG2;
	b.size = st.st_size;
	b.get_page = get_page;
	b.put_page = put_page;
	b.ctx = map;
	EXPECT(ub_open(&b, 0) == 0, "ub_open");
	EXPECT(mapped == 0, "pages leaked by ub_open");
	for (k = 0; k < UB_SECT_NR_V1; k++)
		EXPECT(ub_check_section_crc(&b, k) == 0, "section %llu crc", (unsigned long long)k);
	EXPECT(ub_check_section_crc(&b, UB_SECT_NR_V1) == -EINVAL, "crc of bad id");
	EXPECT(ub_read_inode(&b, b.inode_count, &i) == -EUCLEAN, "inode past the end");

	/* every directory reachable from the root */
	queue = malloc(sizeof(*queue));
	queue[nq++] = b.root_ino;
	qcap = 1;
	for (head = 0; head < nq; head++) {
		EXPECT(ub_read_inode(&b, queue[head], &i) == 0, "dir inode");
		test_dir(&b, &i, &queue, &nq, &qcap);
		EXPECT(mapped == 0, "pages leaked in directory %llu", (unsigned long long)i.index);
	}
	/* every inode */
	for (k = 0; k < b.inode_count; k++) {
		EXPECT(ub_read_inode(&b, k, &i) == 0, "inode %llu", (unsigned long long)k);
		EXPECT(ub_inode_st_ino(&i) == k + 1, "st_ino");
		test_data(&b, &i);
		test_xattrs(&b, &i);
		EXPECT(mapped == 0, "pages leaked at inode %llu", (unsigned long long)k);
	}
	free(queue);
	munmap(map, st.st_size);
	printf("%s: ok (%zu directories, %llu inodes)\n", path, nq,
	       (unsigned long long)b.inode_count);
}

int main(int argc, char **argv)
{
	u8 d[UB_DIGEST_SIZE];
	char p[UB_OBJECT_PATH_LEN];
	u64 idx;
	int i;

	/* object path of a known digest, rdev decoding, st_ino mapping */
	for (i = 0; i < UB_DIGEST_SIZE; i++)
		d[i] = (u8)(i * 17);
	blob_path = "(unit)";
	EXPECT(ub_object_path(d, p) == 65 &&
	       !strcmp(p, "00/112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f"),
	       "%s", p);
	{
		struct ub_inode_info dev = { .mode = UB_S_IFCHR, .aux = 0 };

		/* new_encode_dev(major 0xabc, minor 0x12345) */
		dev.aux = (0x45) | (0xabc << 8) | ((0x12345 & ~0xff) << 12);
		EXPECT(ub_inode_rdev_major(&dev) == 0xabc && ub_inode_rdev_minor(&dev) == 0x12345,
		       "rdev %x:%x", ub_inode_rdev_major(&dev), ub_inode_rdev_minor(&dev));
	}
	EXPECT(!ub_st_ino_to_index(0, &idx) && ub_st_ino_to_index(1, &idx) && idx == 0, "st_ino");
	EXPECT(ub_crc32c(0, "123456789", 9) == 0xe3069283, "crc32c check value");

	for (i = 1; i < argc; i++)
		test_blob(argv[i]);
	return 0;
}
