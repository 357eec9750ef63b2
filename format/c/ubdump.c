// SPDX-License-Identifier: Apache-2.0
/*
 * ubdump: print the stable text dump of SPEC §9 of a unionblob blob, byte
 * for byte what `cfs dump` (format/dump.ts) prints.  It is also the
 * userspace fsck-lite of the C reader: besides what ubreader checks on
 * every access it verifies section CRCs, global name order, digest order,
 * xattr name order, parent links, the dirent and directory counts, and that
 * the tree is a tree (no directory reached twice, no directory data shared).
 *
 *   ubdump [--no-crc] [-q] BLOB...
 *
 * --no-crc skips the header and section CRCs so that corrupted test blobs
 * reach the structure checks; -q suppresses the dump (checks only).
 * Exit: 0 ok, 1 corrupt blob (one line on stderr), 2 usage or I/O error.
 *
 * The walk is depth-first with an explicit stack: nothing recurses on blob
 * data, and the work is linear in the blob because every directory and every
 * byte of directory data is visited at most once.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ubreader.h"

static const char *blob_path;

/* Report corruption and leave with status 1. */
static void __attribute__((noreturn, format(printf, 1, 2))) corrupt(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ubdump: %s: corrupt blob: ", blob_path);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/*
 * A reader error: corruption (and an unsupported format) is exit 1, an I/O
 * error exit 2.  The context is formatted only when something failed.
 */
static void __attribute__((format(printf, 2, 3))) check(int err, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	if (err >= 0)
		return;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (err == -EINVAL)
		corrupt("%s: unsupported or invalid", what);
	if (err == -EUCLEAN || err == -ENOTDIR)
		corrupt("%s: %s", what, err == -EUCLEAN ? "invalid" : "not a directory");
	fprintf(stderr, "ubdump: %s: %s: %s\n", blob_path, what, strerror(-err));
	exit(2);
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fprintf(stderr, "ubdump: out of memory\n");
		exit(2);
	}
	return p;
}

/* ---- the blob in memory ------------------------------------------------ */

static const void *mem_get_page(void *ctx, u64 index, void **cookie)
{
	(void)cookie;
	return (const u8 *)ctx + (index << UB_BLOCK_SIZE_LOG2);
}

/* ---- output ------------------------------------------------------------ */

static bool quiet;

static void out_str(const char *s)
{
	if (!quiet)
		fputs(s, stdout);
}

static void __attribute__((format(printf, 1, 2))) out_fmt(const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

/* SPEC §9 escaping: bytes outside 0x21..0x7e and '\' as \xHH. */
static void out_escaped(const u8 *s, size_t len)
{
	size_t i;

	if (quiet)
		return;
	for (i = 0; i < len; i++) {
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == '\\')
			printf("\\x%02x", s[i]);
		else
			putchar(s[i]);
	}
}

static void out_hex(const u8 *s, size_t len)
{
	size_t i;

	if (quiet)
		return;
	for (i = 0; i < len; i++)
		printf("%02x", s[i]);
}

/* ---- one line ---------------------------------------------------------- */

static const char *type_name(const struct ub_inode_info *i)
{
	switch (ub_inode_type(i)) {
	case UB_S_IFREG:	return "reg";
	case UB_S_IFDIR:	return "dir";
	case UB_S_IFLNK:	return "lnk";
	case UB_S_IFCHR:	return "chr";
	case UB_S_IFBLK:	return "blk";
	case UB_S_IFIFO:	return "fifo";
	default:		return "sock";
	}
}

static void out_payload(const struct ub_blob *b, const struct ub_inode_info *i)
{
	u8 buf[UB_INLINE_MAX];
	int n;

	if (ub_inode_is_lnk(i)) {
		n = ub_readlink(b, i, (char *)buf, sizeof(buf));
		check(n, "inode %llu: symlink target", (unsigned long long)i->index);
		out_str("link:");
		out_escaped(buf, n);
	} else if (ub_inode_is_inline(i)) {
		n = ub_read_data(b, i, 0, buf, sizeof(buf));
		check(n, "inode %llu: inline data", (unsigned long long)i->index);
		if ((u64)n != i->size)
			corrupt("inode %llu: short inline data", (unsigned long long)i->index);
		out_str("inline:");
		out_hex(buf, n);
	} else if (ub_inode_is_external(i)) {
		check(ub_get_digest(b, i, buf), "inode %llu: digest", (unsigned long long)i->index);
		out_str("obj:");
		out_hex(buf, UB_DIGEST_SIZE);
	} else if (ub_inode_is_dir(i)) {
		out_fmt("dir:%llu", (unsigned long long)i->size);
	} else if (ub_inode_is_dev(i)) {
		out_fmt("dev:%u,%u", ub_inode_rdev_major(i), ub_inode_rdev_minor(i));
	} else {
		out_str("-");
	}
}

/* Scratch buffers for xattr names, reused across lines. */
static char xname[UB_XATTR_NAME_MAX], xprev[UB_XATTR_NAME_MAX];
static u8 *xvalue;

static void out_xattrs(const struct ub_blob *b, const struct ub_inode_info *i)
{
	struct ub_xattr_iter it;
	struct ub_xattr x;
	u32 prev_len = 0;
	int n = 0, ret;

	check(ub_xattr_iter_init(b, i, &it), "inode %llu: xattr set %u", (unsigned long long)i->index, i->xattr_set);
	while ((ret = ub_xattr_next(&it, &x)) > 0) {
		int len = ub_xattr_copy_name(b, &x, 0, xname, sizeof(xname));

		check(len, "inode %llu: xattr name", (unsigned long long)i->index);
		/* stored sorted by full name, unique (SPEC §8) */
		if (n > 0) {
			u32 m = prev_len < (u32)len ? prev_len : (u32)len;
			int c = memcmp(xprev, xname, m);

			if (c > 0 || (c == 0 && prev_len >= (u32)len))
				corrupt("inode %llu: xattr names not sorted", (unsigned long long)i->index);
		}
		memcpy(xprev, xname, len);
		prev_len = len;
		check(ub_xattr_copy_value(b, &x, xvalue, UB_XATTR_VALUE_MAX),
		      "inode %llu: xattr value", (unsigned long long)i->index);
		out_str(n++ ? "," : "");
		out_escaped((const u8 *)xname, len);
		out_str("=");
		out_hex(xvalue, x.value_len);
	}
	check(ret, "inode %llu: xattr set %u", (unsigned long long)i->index, i->xattr_set);
	if (n == 0)
		out_str("-");
}

static void out_line(const struct ub_blob *b, const char *path, size_t path_len,
		     const struct ub_inode_info *i)
{
	out_escaped((const u8 *)path, path_len);
	out_fmt(" %llu %s %04o %u %u %u %llu %lld.%09u ",
		(unsigned long long)ub_inode_st_ino(i), type_name(i),
		i->mode & UB_S_IPERM, i->uid, i->gid, i->nlink,
		(unsigned long long)i->size, (long long)i->mtime_sec, i->mtime_nsec);
	out_payload(b, i);
	out_str(" ");
	out_xattrs(b, i);
	out_str("\n");
}

/* ---- the walk ---------------------------------------------------------- */

/* One directory being listed. */
struct frame {
	struct ub_inode_info dir;
	u64 pos;		/* readdir position of the next entry */
	size_t path_len;	/* its path's length in the path buffer */
	u32 prev_len;		/* previous entry's name, for the order check */
	char prev[UB_NAME_MAX];
};

/* Collects exactly one entry from ub_readdir(). */
struct one_entry {
	bool got;
	char name[UB_NAME_MAX];
	u32 len;
	u64 ino;
	unsigned int dtype;
};

static int take_one(void *arg, const struct ub_dirent_info *de)
{
	struct one_entry *e = arg;

	if (e->got)
		return 1;
	e->got = true;
	memcpy(e->name, de->name, de->name_len);
	e->len = de->name_len;
	e->ino = de->ino;
	e->dtype = de->dtype;
	return 0;
}

struct walk {
	const struct ub_blob *b;
	u8 *dir_seen;		/* bitmap over inode indexes */
	u8 *dirs_seen;		/* bitmap over DIRS bytes */
	u64 nonempty_dirs;
	struct frame *stack;
	size_t depth, cap;
	char *path;
	size_t path_cap;
	u64 dirents;
};

static bool test_and_set(u8 *map, u64 bit)
{
	bool was = map[bit >> 3] & (1u << (bit & 7));

	map[bit >> 3] |= 1u << (bit & 7);
	return was;
}

/* Claim a directory and its data; each may be reached once. */
static void claim_dir(struct walk *w, const struct ub_inode_info *d)
{
	u32 k;

	if (test_and_set(w->dir_seen, d->index))
		corrupt("directory inode %llu reached twice", (unsigned long long)d->index);
	for (k = 0; k < d->payload_len; k++)
		if (test_and_set(w->dirs_seen, d->payload + k))
			corrupt("directory inode %llu: data at DIRS+%llu shared with another directory",
				(unsigned long long)d->index, (unsigned long long)(d->payload + k));
	w->nonempty_dirs += d->payload_len != 0;
}

static void push_dir(struct walk *w, const struct ub_inode_info *d, size_t path_len)
{
	struct frame *f;

	claim_dir(w, d);
	if (w->depth == w->cap) {
		w->cap = w->cap ? 2 * w->cap : 64;
		w->stack = xrealloc(w->stack, w->cap * sizeof(*w->stack));
	}
	f = &w->stack[w->depth++];
	f->dir = *d;
	f->pos = UB_DIRPOS_FIRST;
	f->path_len = path_len;
	f->prev_len = 0;
}

/* Append "/name" to the path of the top frame; returns the new length. */
static size_t path_append(struct walk *w, size_t at, const char *name, u32 len)
{
	if (w->path_cap < at + len + 2) {
		w->path_cap = 2 * (at + len + 2);
		w->path = xrealloc(w->path, w->path_cap);
	}
	w->path[at] = '/';
	memcpy(w->path + at + 1, name, len);
	return at + 1 + len;
}

/* Names strictly increase across the whole directory (SPEC §5). */
static void check_order(struct frame *f, const struct one_entry *e)
{
	if (f->prev_len) {
		u32 m = f->prev_len < e->len ? f->prev_len : e->len;
		int c = memcmp(f->prev, e->name, m);

		if (c > 0 || (c == 0 && f->prev_len >= e->len))
			corrupt("directory inode %llu: names not sorted",
				(unsigned long long)f->dir.index);
	}
	memcpy(f->prev, e->name, e->len);
	f->prev_len = e->len;
}

/* Visit the next entry of the top directory, or pop it when done. */
static void walk_step(struct walk *w)
{
	struct frame *f = &w->stack[w->depth - 1];
	struct ub_inode_info child;
	struct one_entry e = { .got = false };
	size_t len;

	check(ub_readdir(w->b, &f->dir, &f->pos, take_one, &e),
	      "directory inode %llu at position %llu",
	      (unsigned long long)f->dir.index, (unsigned long long)f->pos);
	if (!e.got) {
		w->depth--;
		return;
	}
	check_order(f, &e);
	w->dirents++;
	check(ub_read_inode(w->b, e.ino, &child), "inode %llu", (unsigned long long)e.ino);
	if (ub_inode_dtype(&child) != e.dtype)
		corrupt("dirent type %u differs from inode %llu", e.dtype,
			(unsigned long long)e.ino);
	len = path_append(w, f->path_len, e.name, e.len);
	out_line(w->b, w->path, len, &child);
	if (ub_inode_is_dir(&child)) {
		if (child.aux != f->dir.index)
			corrupt("directory inode %llu: parent %u, reached from %llu",
				(unsigned long long)child.index, child.aux,
				(unsigned long long)f->dir.index);
		push_dir(w, &child, len);	/* may move the stack: f is stale */
	}
}

static void dump_tree(const struct ub_blob *b)
{
	struct walk w = { .b = b };
	struct ub_inode_info root;

	w.dir_seen = calloc(1, (b->inode_count >> 3) + 1);
	w.dirs_seen = calloc(1, (b->sect[UB_SECT_DIRS].size >> 3) + 1);
	if (!w.dir_seen || !w.dirs_seen) {
		fprintf(stderr, "ubdump: out of memory\n");
		exit(2);
	}
	check(ub_read_inode(b, b->root_ino, &root), "root inode");
	out_line(b, "/", 1, &root);
	push_dir(&w, &root, 0);
	while (w.depth)
		walk_step(&w);
	if (w.dirents != b->dirent_count)
		corrupt("header says %llu dirents, tree has %llu",
			(unsigned long long)b->dirent_count, (unsigned long long)w.dirents);
	if (w.nonempty_dirs != b->sect[UB_SECT_DIRS].count)
		corrupt("DIRS count says %llu non-empty directories, tree has %llu",
			(unsigned long long)b->sect[UB_SECT_DIRS].count,
			(unsigned long long)w.nonempty_dirs);
	free(w.dir_seen);
	free(w.dirs_seen);
	free(w.stack);
	free(w.path);
}

/* ---- whole-blob checks ------------------------------------------------- */

/* DIGESTS sorted ascending, unique (SPEC §7). */
static void check_digests(const struct ub_blob *b)
{
	u8 prev[UB_DIGEST_SIZE], cur[UB_DIGEST_SIZE];
	u64 k;

	for (k = 0; k < b->sect[UB_SECT_DIGESTS].count; k++) {
		check(ub_read_digest(b, k, cur), "digest %llu", (unsigned long long)k);
		if (k && memcmp(prev, cur, UB_DIGEST_SIZE) >= 0)
			corrupt("digests not sorted at %llu", (unsigned long long)k);
		memcpy(prev, cur, UB_DIGEST_SIZE);
	}
}

static int dump_one(const char *path, bool verify_crc)
{
	static const char *const names[UB_SECT_NR_V1] = {
		"INODES", "DIRS", "DATA", "DIGESTS", "XATTR_INDEX", "XATTR_DATA",
	};
	struct ub_blob b = { 0 };
	struct stat st;
	void *map;
	unsigned int id;
	int fd, err;

	blob_path = path;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(path);
		return 2;
	}
	if (st.st_size < UB_BLOCK_SIZE)
		corrupt("%lld bytes, smaller than the header page", (long long)st.st_size);
	map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		perror(path);
		return 2;
	}
	b.size = st.st_size;
	b.get_page = mem_get_page;
	b.ctx = map;
	err = ub_open(&b, verify_crc ? 0 : UB_OPEN_NO_CRC);
	if (err == -EINVAL && b.version_major != UB_VERSION_MAJOR) {
		fprintf(stderr, "ubdump: %s: format version %u: %s (this reads version %u)\n", path,
			b.version_major, b.version_major < UB_VERSION_MAJOR ?
			"rebuild the blob with this cfs" : "too new for this reader", UB_VERSION_MAJOR);
		exit(1);
	}
	check(err, "header or root inode");
	for (id = 0; verify_crc && id < UB_SECT_NR_V1; id++)
		if (ub_check_section_crc(&b, id))
			corrupt("section %s: crc mismatch", names[id]);
	check_digests(&b);

	out_fmt("# unionblob v%u inodes=%llu dirents=%llu digests=%llu xattrsets=%llu\n",
		b.version_major, (unsigned long long)b.inode_count, (unsigned long long)b.dirent_count,
		(unsigned long long)b.sect[UB_SECT_DIGESTS].count,
		(unsigned long long)b.sect[UB_SECT_XATTR_INDEX].count);
	dump_tree(&b);
	munmap(map, st.st_size);
	return 0;
}

int main(int argc, char **argv)
{
	bool verify_crc = true;
	int i, ret = 0, files = 0;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--no-crc"))
			verify_crc = false;
		else if (!strcmp(argv[i], "-q"))
			quiet = true;
		else if (!strcmp(argv[i], "--") && ++i)
			break;
		else
			goto usage;
	}
	xvalue = xrealloc(NULL, UB_XATTR_VALUE_MAX);
	for (; i < argc; i++, files++) {
		ret = dump_one(argv[i], verify_crc);
		if (ret)
			return ret;
	}
	if (files == 0)
		goto usage;
	if (fflush(stdout) || ferror(stdout)) {
		perror("ubdump: stdout");
		return 2;
	}
	return 0;
usage:
	fprintf(stderr, "usage: ubdump [--no-crc] [-q] BLOB...\n");
	return 2;
}
