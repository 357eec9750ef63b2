// SPDX-License-Identifier: Apache-2.0
/*
 * ubt: the guest-side helper of the kernel tests, linked statically so the
 * initramfs needs nothing but busybox.  Every subcommand prints plain lines
 * the guest script and the host compare.
 *
 *   ubt walk [-q] ROOT        SPEC §9-like dump of a mounted tree (content as
 *                             sha256 of read(), checked against mmap());
 *                             -q: just walk everything, print a summary
 *   ubt dirtest DIR           getdents in small pieces, telldir/seekdir and
 *                             resumed reads, lookups of present/absent names
 *   ubt sha FILE              sha256 of read()
 *   ubt splice FILE           sha256 of the file through splice() to a pipe
 *   ubt odirect FILE          open O_DIRECT, read 4096 aligned bytes; clear
 *                             O_DIRECT with fcntl, read 1 byte at offset 1; set
 *                             it again, read 1 byte at offset 1; prints the
 *                             three results ("OK", "ERR ENAME") on one line
 *   ubt pfn FILE [PAGE]       physical frame of a mapped page (/proc/self/pagemap)
 *   ubt mincore FILE          resident pages of a mapping: "RES TOTAL"
 *   ubt verity-enable FILE..  FS_IOC_ENABLE_VERITY (sha256, 4096)
 *   ubt verity-measure FILE   FS_IOC_MEASURE_VERITY digest in hex
 *   ubt getxattr PATH NAME    value in hex, or "ERR ENAME"
 *   ubt listxattr PATH        names, one per line
 *   ubt stat PATH             "ino nlink mode uid gid size"
 *   ubt statfs PATH           "type=HEX bsize=N blocks=N files=N namelen=N"
 *   ubt statwalk ROOT         bench: readdir+lstat+listxattr everything, time it
 *   ubt readall ROOT          bench: read every regular file, time it
 *   ubt now                   CLOCK_MONOTONIC in microseconds
 *   ubt as UID GID PROG ARG.. exec PROG as UID:GID (no supplementary groups)
 *   ubt manifest ROOT OUT     tree manifest for test/lib/treeman.mjs (see below)
 *   ubt corrupt DIR BASEDIR MNT
 *                             mount each DIR/NAME.ub at MNT (basedir=BASEDIR),
 *                             walk -q it, unmount; one summary line (the
 *                             loop is here, not in sh: 1,000 blobs under TCG)
 *   ubt fsmount SRC OPT=VAL.. [--rw] [--target DIR]
 *                             mount with fsopen/fsconfig; prints "OK" or
 *                             "ERR ENAME" plus the fs_context messages
 *   ubt idmap SRC TARGET FROM TO COUNT
 *                             idmapped mount of SRC at TARGET: ids FROM..
 *                             appear as TO..; prints "OK" or "ERR ENAME STEP"
 *   ubt handles [-x] ROOT     a file handle of every entry under ROOT (the
 *                             mount's root), the dentry and inode caches
 *                             dropped, then each handle opened again: same
 *                             inode and type, same content, directories
 *                             reconnected at their path; forged handles
 *                             ESTALE (-x: not forged, and directories not
 *                             compared by st_ino: ROOT is another fs, e.g.
 *                             an overlay).  "OK entries=N dirs=N
 *                             files=N" or "FAIL ..."
 *   ubt fh PATH               its file handle: "TYPE HEX" (or "ERR ENAME")
 *   ubt byfh MNT TYPE HEX     open_by_handle_at on MNT's filesystem: "OK" or
 *                             "ERR ENAME"
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <sys/wait.h>
#include <sched.h>
#include <grp.h>
#include <unistd.h>
#include <linux/fsverity.h>

#include "sha256.h"

static const char *ename(int e)
{
	const char *n = strerrorname_np(e);

	return n ? n : "E?";
}

/* ---- SHA-256: the FUSE server's (mounter/fuse/sha256.c, built in) ------- */

static void sha256_hex(struct sha256 *s, char out[65])
{
	uint8_t d[SHA256_SIZE];
	int i;

	sha256_final(s, d);
	for (i = 0; i < SHA256_SIZE; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

/* ---- content ----------------------------------------------------------- */

static int sha_fd(int fd, char out[65], off_t *size);

/* sha256 of read(); returns 0 or errno. */
static int sha_read(const char *path, char out[65], off_t *size)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW);

	if (fd < 0)
		return errno;
	return sha_fd(fd, out, size);
}

/* sha256 of read() of open file @fd, which it closes; returns 0 or errno. */
static int sha_fd(int fd, char out[65], off_t *size)
{
	static char buf[1 << 16];
	struct sha256 s;
	ssize_t n;

	sha256_init(&s);
	*size = 0;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		sha256_update(&s, buf, n);
		*size += n;
	}
	if (n < 0) {
		int e = errno;

		close(fd);
		return e;
	}
	close(fd);
	sha256_hex(&s, out);
	return 0;
}

/* sha256 of an mmap of the whole file; returns 0 or errno. */
static int sha_mmap(const char *path, off_t size, char out[65])
{
	struct sha256 s;
	void *p;
	int fd = open(path, O_RDONLY | O_NOFOLLOW);

	if (fd < 0)
		return errno;
	sha256_init(&s);
	if (size > 0) {
		p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			int e = errno;

			close(fd);
			return e;
		}
		sha256_update(&s, p, size);
		munmap(p, size);
	}
	close(fd);
	sha256_hex(&s, out);
	return 0;
}

static int sha_splice(const char *path, char out[65])
{
	static char buf[1 << 16];
	struct sha256 s;
	int fd = open(path, O_RDONLY), pfd[2];
	loff_t off = 0;
	ssize_t n;

	if (fd < 0)
		return errno;
	if (pipe(pfd))
		return errno;
	sha256_init(&s);
	while ((n = splice(fd, &off, pfd[1], NULL, sizeof(buf), 0)) > 0) {
		ssize_t got = 0;

		while (got < n) {
			ssize_t m = read(pfd[0], buf, sizeof(buf));

			if (m <= 0)
				return EIO;
			sha256_update(&s, buf, m);
			got += m;
		}
	}
	if (n < 0)
		return errno;
	close(fd);
	close(pfd[0]);
	close(pfd[1]);
	sha256_hex(&s, out);
	return 0;
}

/* ---- dump -------------------------------------------------------------- */

static void put_escaped(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = s[i];

		if (c < 0x21 || c > 0x7e || c == '\\')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

static int cmp_names(const void *a, const void *b)
{
	const char *x = *(const char *const *)a, *y = *(const char *const *)b;

	return strcmp(x, y);	/* strcmp compares as unsigned char: memcmp order */
}

static const char *type_name(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFREG: return "reg";
	case S_IFDIR: return "dir";
	case S_IFLNK: return "lnk";
	case S_IFCHR: return "chr";
	case S_IFBLK: return "blk";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "sock";
	}
	return "?";
}

static int quiet, nerrors;
static long nentries;

static void err_note(const char *what, const char *path, int e)
{
	nerrors++;
	if (!quiet)
		printf("!ERR %s %s %s\n", what, path, ename(e));
}

static void dump_xattrs(const char *path)
{
	static char names[1 << 16];
	static unsigned char val[1 << 16];
	char *list[4096];
	ssize_t n = llistxattr(path, names, sizeof(names));
	int cnt = 0, i;
	char *p;

	if (n < 0) {
		err_note("listxattr", path, errno);
		if (!quiet)
			printf(" ?\n");
		return;
	}
	for (p = names; p < names + n && cnt < 4096; p += strlen(p) + 1)
		list[cnt++] = p;
	qsort(list, cnt, sizeof(list[0]), cmp_names);
	if (quiet) {
		for (i = 0; i < cnt; i++)
			if (lgetxattr(path, list[i], val, sizeof(val)) < 0)
				nerrors++;
		return;
	}
	if (!cnt)
		printf(" -");
	for (i = 0; i < cnt; i++) {
		ssize_t v = lgetxattr(path, list[i], val, sizeof(val));

		printf("%c", i ? ',' : ' ');
		put_escaped(list[i], strlen(list[i]));
		printf("=");
		if (v < 0)
			printf("ERR:%s", ename(errno));
		for (ssize_t k = 0; k < v; k++)
			printf("%02x", val[k]);
	}
	printf("\n");
}

static void dump_payload(const char *path, const struct stat *st)
{
	char target[4097], h1[65], h2[65];
	off_t size;
	ssize_t n;
	int e;

	switch (st->st_mode & S_IFMT) {
	case S_IFREG:
		if (st->st_size == 0 && !quiet) {
			printf(" -");
			break;
		}
		e = sha_read(path, h1, &size);
		if (e) {
			err_note("read", path, e);
			if (!quiet)
				printf(" ERR:%s", ename(e));
			break;
		}
		if (quiet)
			break;	/* corruption walks: read is enough, keep them fast */
		e = sha_mmap(path, size, h2);
		if (e || strcmp(h1, h2)) {
			err_note("mmap", path, e ? e : EILSEQ);
			if (!quiet)
				printf(" MMAP-MISMATCH");
			break;
		}
		if (!quiet)
			printf(" sha256:%s", h1);
		if (size != st->st_size)
			err_note("size", path, EFBIG);
		break;
	case S_IFDIR:
		if (!quiet)
			printf(" dir:%lld", (long long)st->st_size);
		break;
	case S_IFLNK:
		n = readlink(path, target, sizeof(target));
		if (n < 0) {
			err_note("readlink", path, errno);
			if (!quiet)
				printf(" ERR:%s", ename(errno));
			break;
		}
		if (!quiet) {
			printf(" link:");
			put_escaped(target, n);
		}
		break;
	case S_IFCHR:
	case S_IFBLK:
		if (!quiet)
			printf(" dev:%u,%u", major(st->st_rdev), minor(st->st_rdev));
		break;
	default:
		if (!quiet)
			printf(" -");
	}
}

static void dump_entry(const char *path, const char *shown, const struct stat *st)
{
	nentries++;
	if (!quiet) {
		put_escaped(shown, strlen(shown));
		printf(" %llu %s %04o %u %u %lu %lld %lld.%09ld",
		       (unsigned long long)st->st_ino, type_name(st->st_mode),
		       st->st_mode & 07777, st->st_uid, st->st_gid,
		       (unsigned long)st->st_nlink, (long long)st->st_size,
		       (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
	}
	dump_payload(path, st);
	dump_xattrs(path);
}

struct seen {
	dev_t dev;
	ino_t ino;
};

static void walk(const char *path, const char *shown, int depth, struct seen *stack)
{
	struct stat st;
	char **names = NULL;
	size_t cnt = 0, cap = 0, i;
	struct dirent *de;
	DIR *d;
	int k;

	if (lstat(path, &st)) {
		err_note("lstat", path, errno);
		return;
	}
	dump_entry(path, shown, &st);
	if (!S_ISDIR(st.st_mode))
		return;
	/* A corrupt blob must not make us loop: stop at a directory we are in. */
	for (k = 0; k < depth; k++)
		if (stack[k].dev == st.st_dev && stack[k].ino == st.st_ino) {
			err_note("cycle", path, ELOOP);
			return;
		}
	if (depth >= 200) {
		err_note("depth", path, ELOOP);
		return;
	}
	stack[depth].dev = st.st_dev;
	stack[depth].ino = st.st_ino;

	d = opendir(path);
	if (!d) {
		err_note("opendir", path, errno);
		return;
	}
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (cnt == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof(*names));
		}
		names[cnt++] = strdup(de->d_name);
	}
	if (errno)
		err_note("readdir", path, errno);
	closedir(d);
	qsort(names, cnt, sizeof(*names), cmp_names);
	for (i = 0; i < cnt; i++) {
		size_t lp = strlen(path), ls = strlen(shown), ln = strlen(names[i]);
		char *child = malloc(lp + ln + 2), *cshown = malloc(ls + ln + 2);

		sprintf(child, "%s/%s", path, names[i]);
		sprintf(cshown, "%s/%s", strcmp(shown, "/") ? shown : "", names[i]);
		walk(child, cshown, depth + 1, stack);
		free(child);
		free(cshown);
		free(names[i]);
	}
	free(names);
}

static int cmd_walk(int argc, char **argv)
{
	static struct seen stack[256];

	if (argc > 2 && !strcmp(argv[1], "-q")) {
		quiet = 1;
		argv++;
	}
	walk(argv[1], "/", 0, stack);
	if (quiet)
		printf("entries=%ld errors=%d\n", nentries, nerrors);
	return 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

/* ---- file handles ------------------------------------------------------ */

struct handle_entry {
	char *path;
	struct stat st;
	struct file_handle *fh;
	char sha[65];
};

static struct handle_entry *hentries;
static size_t nhentries, caphentries;
static size_t handles_max = (size_t)-1;	/* entries collected at most */

/* Every entry under @dir (depth first), @dir included, with its handle. */
static void collect_handles(const char *dir, int depth)
{
	struct handle_entry *e;
	DIR *d;
	struct dirent *de;
	int mount_id;

	if (nhentries >= handles_max)
		return;
	if (nhentries == caphentries) {
		caphentries = caphentries ? 2 * caphentries : 1024;
		hentries = realloc(hentries, caphentries * sizeof(*hentries));
		if (!hentries)
			exit(3);
	}
	e = &hentries[nhentries];
	memset(e, 0, sizeof(*e));
	e->path = strdup(dir);
	e->fh = calloc(1, sizeof(*e->fh) + MAX_HANDLE_SZ);
	if (lstat(dir, &e->st))
		return;
	e->fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(AT_FDCWD, dir, e->fh, &mount_id, 0)) {
		e->fh->handle_bytes = 0;
		nhentries++;
		return;
	}
	nhentries++;
	if (!S_ISDIR(e->st.st_mode) || depth > 64 || !(d = opendir(dir)))
		return;
	while ((de = readdir(d))) {
		char child[4096];

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (snprintf(child, sizeof(child), "%s/%s", dir, de->d_name) >= (int)sizeof(child))
			continue;
		collect_handles(child, depth + 1);
	}
	closedir(d);
}

static void free_handles(void)
{
	for (size_t i = 0; i < nhentries; i++) {
		free(hentries[i].path);
		free(hentries[i].fh);
	}
	nhentries = 0;
}

/* Evict what is not in use, so handles are decoded into new dentries and inodes. */
static void drop_dentries(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	if (fd >= 0) {
		if (write(fd, "2\n", 2) < 0)
			nerrors++;
		close(fd);
	}
}

/* open_by_handle_at of a copy of @fh changed by @forge: errno, or 0 if it opened. */
static int forged_open(int mfd, const struct file_handle *fh, void (*forge)(struct file_handle *))
{
	struct file_handle *f = malloc(sizeof(*f) + MAX_HANDLE_SZ);
	int fd, err = 0;

	memcpy(f, fh, sizeof(*f) + fh->handle_bytes);
	forge(f);
	fd = open_by_handle_at(mfd, f, O_PATH);
	if (fd >= 0)
		close(fd);
	else
		err = errno;
	free(f);
	return err;
}

static void forge_generation(struct file_handle *f) { f->f_handle[8] ^= 0x01; }
static void forge_index(struct file_handle *f) { memset(f->f_handle, 0xff, 8); }
static void forge_type(struct file_handle *f) { f->handle_type = 0x42; }
static void forge_short(struct file_handle *f) { f->handle_bytes = 8; }

static int cmd_handles(int argc, char **argv)
{
	int forge = !(argc > 2 && !strcmp(argv[1], "-x"));
	const char *root = argv[forge ? 1 : 2];
	size_t dirs = 0, files = 0, first_file = (size_t)-1;
	int mfd;

	collect_handles(root, 0);
	for (size_t i = 0; i < nhentries; i++) {
		struct handle_entry *e = &hentries[i];

		if (!e->fh->handle_bytes) {
			printf("FAIL name_to_handle_at %s: %s\n", e->path, ename(errno));
			return 1;
		}
		if (S_ISREG(e->st.st_mode)) {
			off_t size;
			int err = sha_read(e->path, e->sha, &size);

			if (err) {
				printf("FAIL read %s: %s\n", e->path, ename(err));
				return 1;
			}
			if (first_file == (size_t)-1)
				first_file = i;
		}
		/* one inode, one handle; two inodes, two handles */
		for (size_t j = 0; j < i; j++) {
			const struct handle_entry *o = &hentries[j];
			int same = o->fh->handle_type == e->fh->handle_type &&
				   o->fh->handle_bytes == e->fh->handle_bytes &&
				   !memcmp(o->fh->f_handle, e->fh->f_handle, e->fh->handle_bytes);

			if (same != (o->st.st_ino == e->st.st_ino && o->st.st_dev == e->st.st_dev)) {
				printf("FAIL handles of %s and %s: %s for %s inodes\n", o->path, e->path,
				       same ? "equal" : "different", same ? "different" : "one");
				return 1;
			}
		}
	}
	drop_dentries();
	mfd = open(root, O_RDONLY | O_DIRECTORY);
	if (mfd < 0) {
		printf("FAIL open %s: %s\n", root, ename(errno));
		return 1;
	}
	for (size_t i = 0; i < nhentries; i++) {
		const struct handle_entry *e = &hentries[i];
		char link[64], at[4096];
		struct stat st;
		ssize_t n;
		int fd = open_by_handle_at(mfd, e->fh, O_PATH);

		if (fd < 0) {
			printf("FAIL open_by_handle_at %s: %s\n", e->path, ename(errno));
			return 1;
		}
		/*
		 * An overlay over layers on several filesystems numbers its directories
		 * anew each time it makes their inode (overlayfs.rst, "Inode properties"):
		 * with -x a directory is known by the path it is reconnected at.
		 */
		if (!forge && S_ISDIR(e->st.st_mode) && !fstat(fd, &st))
			st.st_ino = e->st.st_ino;
		else if (fstat(fd, &st))
			st.st_ino = (ino_t)-1;
		if (st.st_ino != e->st.st_ino || st.st_mode != e->st.st_mode ||
		    st.st_size != e->st.st_size || st.st_nlink != e->st.st_nlink || st.st_dev != e->st.st_dev) {
			printf("FAIL %s through its handle: ino %ju mode %o size %jd, want ino %ju mode %o size %jd\n",
			       e->path, (uintmax_t)st.st_ino, st.st_mode, (intmax_t)st.st_size,
			       (uintmax_t)e->st.st_ino, e->st.st_mode, (intmax_t)e->st.st_size);
			return 1;
		}
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		if (S_ISDIR(st.st_mode)) {
			n = readlink(link, at, sizeof(at) - 1);
			at[n < 0 ? 0 : n] = 0;
			if (strcmp(at, e->path)) {
				printf("FAIL directory %s reconnected at [%s]\n", e->path, at);
				return 1;
			}
			dirs++;
		} else if (S_ISREG(st.st_mode)) {
			char sha[65];
			off_t size;
			int rfd = open_by_handle_at(mfd, e->fh, O_RDONLY);
			int err;

			if (rfd < 0) {
				printf("FAIL open_by_handle_at %s O_RDONLY: %s\n", e->path, ename(errno));
				return 1;
			}
			err = sha_fd(rfd, sha, &size);
			if (err || strcmp(sha, e->sha)) {
				printf("FAIL %s through its handle: %s\n", e->path, err ? ename(err) : "other content");
				return 1;
			}
			files++;
		}
		close(fd);
	}
	if (forge && first_file != (size_t)-1) {
		static const struct { const char *what; void (*forge)(struct file_handle *); } forged[] = {
			{ "another generation", forge_generation }, { "an index past the last inode", forge_index },
			{ "an unknown handle type", forge_type }, { "a short handle", forge_short },
		};
		for (size_t k = 0; k < sizeof(forged) / sizeof(forged[0]); k++) {
			int err = forged_open(mfd, hentries[first_file].fh, forged[k].forge);

			if (err != ESTALE) {
				printf("FAIL a handle with %s: %s, want ESTALE\n", forged[k].what, err ? ename(err) : "opened");
				return 1;
			}
		}
	}
	close(mfd);
	printf("OK entries=%zu dirs=%zu files=%zu\n", nhentries, dirs, files);
	free_handles();
	return 0;
}

static int cmd_fh(int argc, char **argv)
{
	struct file_handle *fh = calloc(1, sizeof(*fh) + MAX_HANDLE_SZ);
	int mount_id;

	(void)argc;
	fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(AT_FDCWD, argv[1], fh, &mount_id, 0)) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	printf("%d ", fh->handle_type);
	for (unsigned int i = 0; i < fh->handle_bytes; i++)
		printf("%02x", fh->f_handle[i]);
	printf("\n");
	return 0;
}

static int cmd_byfh(int argc, char **argv)
{
	struct file_handle *fh = calloc(1, sizeof(*fh) + MAX_HANDLE_SZ);
	size_t len = strlen(argv[3]) / 2;
	int mfd = open(argv[1], O_RDONLY | O_DIRECTORY), fd;

	(void)argc;
	if (mfd < 0 || len > MAX_HANDLE_SZ) {
		printf("ERR %s\n", mfd < 0 ? ename(errno) : "E2BIG");
		return 1;
	}
	fh->handle_type = atoi(argv[2]);
	fh->handle_bytes = len;
	for (size_t i = 0; i < len; i++)
		sscanf(argv[3] + 2 * i, "%2hhx", &fh->f_handle[i]);
	fd = open_by_handle_at(mfd, fh, O_PATH);
	if (fd < 0) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	printf("OK\n");
	return 0;
}

/* A corrupt blob's handles: taken, the caches dropped, opened again (any result but a crash). */
static void corrupt_handles(const char *mnt)
{
	int mfd = open(mnt, O_RDONLY | O_DIRECTORY);

	handles_max = 256;
	collect_handles(mnt, 0);
	handles_max = (size_t)-1;
	drop_dentries();
	for (size_t i = 0; mfd >= 0 && i < nhentries; i++) {
		int fd = hentries[i].fh->handle_bytes ? open_by_handle_at(mfd, hentries[i].fh, O_RDONLY) : -1;

		if (fd >= 0)
			close(fd);
	}
	if (mfd >= 0)
		close(mfd);
	free_handles();
}

/* Mount, walk and unmount one corrupt blob: 1 mounted, 0 refused, -1 stuck. */
static int corrupt_one(const char *blob, const char *basedir, const char *mnt)
{
	static struct seen stack[256];
	char opts[8448];

	snprintf(opts, sizeof(opts), "descriptor=%s,basedir=%s", blob, basedir);
	if (mount("corrupt", mnt, "unionblob", MS_RDONLY, opts))
		return 0;
	walk(mnt, "/", 0, stack);
	corrupt_handles(mnt);
	return umount2(mnt, 0) ? -1 : 1;
}

static int cmd_corrupt(int argc, char **argv)
{
	int mounted = 0, refused = 0, stuck = 0;
	struct dirent **list;
	int n, i;

	(void)argc;
	n = scandir(argv[1], &list, NULL, alphasort);
	if (n < 0) {
		perror(argv[1]);
		return 1;
	}
	quiet = 1;
	for (i = 0; i < n; i++) {
		char blob[4096];

		if (ends_with(list[i]->d_name, ".ub")) {
			snprintf(blob, sizeof(blob), "%s/%s", argv[1], list[i]->d_name);
			switch (corrupt_one(blob, argv[2], argv[3])) {
			case 1: mounted++; break;
			case 0: refused++; break;
			default:
				stuck++;
				printf("stuck %s: %s\n", blob, strerror(errno));
				umount2(argv[3], MNT_DETACH);
			}
		}
		free(list[i]);
	}
	free(list);
	printf("mounted=%d refused=%d stuck=%d entries=%ld errors=%d\n",
	       mounted, refused, stuck, nentries, nerrors);
	return 0;
}

/* ---- manifest (compared on the host with test/lib/treeman.mjs) ----------
 * One line per path, tab-separated, every byte string escaped (\xHH outside
 * 0x21..0x7e and for \ , = and tab):
 * REL TYPE MODE UID GID MTIME SIZE SHA256 TARGET RDEV LINKKEY XATTRS
 */

static FILE *mf;

static void mput(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];

		if (c < 0x21 || c > 0x7e || c == '\\' || c == ',' || c == '=')
			fprintf(mf, "\\x%02x", c);
		else
			fputc(c, mf);
	}
}

static void manifest_xattrs(const char *path)
{
	static char names[1 << 16];
	static unsigned char val[1 << 16];
	char *list[4096];
	ssize_t n = llistxattr(path, names, sizeof(names));
	int cnt = 0;

	if (n < 0) {
		err_note("listxattr", path, errno);
		n = 0;
	}
	for (char *p = names; p < names + n && cnt < 4096; p += strlen(p) + 1)
		list[cnt++] = p;
	qsort(list, cnt, sizeof(list[0]), cmp_names);
	fputc('\t', mf);
	if (!cnt)
		fputc('-', mf);
	for (int i = 0; i < cnt; i++) {
		ssize_t v = lgetxattr(path, list[i], val, sizeof(val));

		if (i)
			fputc(',', mf);
		mput(list[i], strlen(list[i]));
		fputc('=', mf);
		if (v < 0)
			err_note("getxattr", path, errno);
		for (ssize_t k = 0; k < v; k++)
			fprintf(mf, "%02x", val[k]);
	}
	fputc('\n', mf);
}

static void manifest_walk(const char *path, const char *rel, int depth)
{
	struct stat st;
	char h[65] = "-", target[4097];
	ssize_t tn = 0;
	off_t size;

	if (lstat(path, &st)) {
		err_note("lstat", path, errno);
		return;
	}
	nentries++;
	if (S_ISREG(st.st_mode)) {
		int e = sha_read(path, h, &size);

		if (e) {
			err_note("read", path, e);
			strcpy(h, "ERR");
		}
	} else if (S_ISLNK(st.st_mode)) {
		tn = readlink(path, target, sizeof(target));
		if (tn < 0) {
			err_note("readlink", path, errno);
			tn = 0;
		}
	}
	mput(rel, strlen(rel));
	fprintf(mf, "\t%s\t%04o\t%u\t%u\t%lld.%09ld\t%lld\t%s\t", type_name(st.st_mode),
		st.st_mode & 07777, st.st_uid, st.st_gid, (long long)st.st_mtim.tv_sec,
		st.st_mtim.tv_nsec, (long long)st.st_size, h);
	if (S_ISLNK(st.st_mode))
		mput(target, tn);
	else
		fputc('-', mf);
	if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
		fprintf(mf, "\t%u:%u", major(st.st_rdev), minor(st.st_rdev));
	else
		fputs("\t-", mf);
	if (!S_ISDIR(st.st_mode) && st.st_nlink > 1)
		fprintf(mf, "\t%llu", (unsigned long long)st.st_ino);
	else
		fputs("\t-", mf);
	manifest_xattrs(path);

	if (!S_ISDIR(st.st_mode) || depth > 200)
		return;
	DIR *d = opendir(path);
	struct dirent *de;
	char **names = NULL;
	size_t cnt = 0, cap = 0;

	if (!d) {
		err_note("opendir", path, errno);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (cnt == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof(*names));
		}
		names[cnt++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, cnt, sizeof(*names), cmp_names);
	for (size_t i = 0; i < cnt; i++) {
		char *child = malloc(strlen(path) + strlen(names[i]) + 2);
		char *crel = malloc(strlen(rel) + strlen(names[i]) + 2);

		sprintf(child, "%s/%s", path, names[i]);
		if (!strcmp(rel, "."))
			strcpy(crel, names[i]);
		else
			sprintf(crel, "%s/%s", rel, names[i]);
		manifest_walk(child, crel, depth + 1);
		free(child);
		free(crel);
		free(names[i]);
	}
	free(names);
}

static int cmd_manifest(int argc, char **argv)
{
	mf = fopen(argv[2], "w");
	if (!mf) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	setvbuf(mf, NULL, _IOFBF, 1 << 20);
	manifest_walk(argv[1], ".", 0);
	if (fclose(mf)) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	printf("entries=%ld errors=%d\n", nentries, nerrors);
	return nerrors ? 1 : 0;
}

/* ---- directories ------------------------------------------------------- */

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

struct ent {
	uint64_t ino;
	int64_t off;
	unsigned char type;
	char name[256];
};

/* All entries of @fd from its current position, read @bufsz bytes at a time. */
static int read_all(int fd, size_t bufsz, struct ent **out, size_t *n)
{
	char *buf = malloc(bufsz);
	size_t cap = 0;
	long r;

	*out = NULL;
	*n = 0;
	while ((r = syscall(SYS_getdents64, fd, buf, bufsz)) > 0) {
		for (long p = 0; p < r;) {
			struct linux_dirent64 *d = (void *)(buf + p);

			if (*n == cap) {
				cap = cap ? cap * 2 : 256;
				*out = realloc(*out, cap * sizeof(**out));
			}
			(*out)[*n].ino = d->d_ino;
			(*out)[*n].off = d->d_off;
			(*out)[*n].type = d->d_type;
			snprintf((*out)[*n].name, 256, "%s", d->d_name);
			(*n)++;
			p += d->d_reclen;
		}
	}
	free(buf);
	return r < 0 ? errno : 0;
}

static int fails;
#define CHECK(cond, ...) do { if (!(cond)) { fails++; printf("FAIL " __VA_ARGS__); printf("\n"); } } while (0)

static int cmd_dirtest(int argc, char **argv)
{
	const char *dir = argv[1];
	struct ent *all, *part;
	size_t n, m, i;
	int fd = open(dir, O_RDONLY | O_DIRECTORY), e;

	if (fd < 0) {
		printf("FAIL open %s\n", ename(errno));
		return 1;
	}
	e = read_all(fd, 1 << 16, &all, &n);
	CHECK(!e, "getdents big buffer: %s", ename(e));
	CHECK(n >= 2 && !strcmp(all[0].name, ".") && !strcmp(all[1].name, ".."),
	      "first entries are . and ..");
	/* Names sorted (memcmp) and unique after . and .. */
	for (i = 3; i < n; i++)
		CHECK(strcmp(all[i - 1].name, all[i].name) < 0, "order %s !< %s",
		      all[i - 1].name, all[i].name);
	/* Small buffers: same sequence, resumed across many calls. */
	lseek(fd, 0, SEEK_SET);
	e = read_all(fd, 300, &part, &m);
	CHECK(!e && m == n, "small buffer: %zu entries, %s, want %zu", m, ename(e), n);
	for (i = 0; i < m && i < n; i++)
		CHECK(!strcmp(part[i].name, all[i].name) && part[i].off == all[i].off &&
		      part[i].ino == all[i].ino, "small buffer entry %zu", i);
	free(part);
	/* seekdir(d_off of entry i) continues at entry i + 1. */
	for (i = 0; i + 1 < n; i += (n > 400 ? 7 : 1)) {
		lseek(fd, all[i].off, SEEK_SET);
		e = read_all(fd, 280, &part, &m);
		CHECK(!e && m == n - i - 1 && !strcmp(part[0].name, all[i + 1].name),
		      "seek to d_off of %s: got %zu entries starting %s", all[i].name, m,
		      m ? part[0].name : "-");
		free(part);
	}
	/* A position between entries resumes at the next one. */
	if (n > 3) {
		lseek(fd, all[2].off - 3, SEEK_SET);
		e = read_all(fd, 1 << 16, &part, &m);
		CHECK(!e && m >= 1 && !strcmp(part[0].name, all[3].name),
		      "mid-entry position resumes at %s (got %s)", all[3].name, m ? part[0].name : "-");
		free(part);
	}
	/* d_ino and d_type agree with lstat; every name can be looked up. */
	for (i = 2; i < n; i++) {
		struct stat st;

		if (fstatat(fd, all[i].name, &st, AT_SYMLINK_NOFOLLOW)) {
			CHECK(0, "lookup %s: %s", all[i].name, ename(errno));
			continue;
		}
		CHECK(st.st_ino == all[i].ino, "d_ino of %s", all[i].name);
		CHECK(IFTODT(st.st_mode) == all[i].type, "d_type of %s", all[i].name);
	}
	/* Names that are not there, next to names that are. */
	for (i = 2; i < n && i < 200; i++) {
		char probe[300];
		struct stat st;

		snprintf(probe, sizeof(probe), "%s~", all[i].name);
		if (strlen(probe) > 255)
			continue;
		/* "name~" is absent unless the directory really has it */
		int present = 0;
		for (size_t j = 2; j < n; j++)
			if (!strcmp(all[j].name, probe))
				present = 1;
		CHECK(present || (fstatat(fd, probe, &st, AT_SYMLINK_NOFOLLOW) && errno == ENOENT),
		      "absent %s", probe);
	}
	{
		struct stat st;
		char longname[300];

		memset(longname, 'z', 256);
		longname[256] = 0;
		CHECK(fstatat(fd, longname, &st, 0) && errno == ENAMETOOLONG, "256-byte name");
		CHECK(fstatat(fd, "\x01", &st, 0) && errno == ENOENT, "absent \\x01");
	}
	free(all);
	close(fd);
	printf("%s entries=%zu\n", fails ? "FAILED" : "OK", n);
	return fails ? 1 : 0;
}

/* ---- pages ------------------------------------------------------------- */

static int cmd_pfn(int argc, char **argv)
{
	long page = argc > 2 ? atol(argv[2]) : 0, psz = sysconf(_SC_PAGESIZE);
	int fd = open(argv[1], O_RDONLY), pm;
	volatile char *p;
	uint64_t ent;

	if (fd < 0) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	p = mmap(NULL, psz, PROT_READ, MAP_SHARED, fd, page * psz);
	if (p == MAP_FAILED) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	(void)p[0];
	pm = open("/proc/self/pagemap", O_RDONLY);
	if (pm < 0 || pread(pm, &ent, 8, ((uintptr_t)p / psz) * 8) != 8) {
		printf("ERR pagemap\n");
		return 1;
	}
	if (!(ent >> 63)) {
		printf("ERR notpresent\n");
		return 1;
	}
	printf("%" PRIx64 "\n", (uint64_t)(ent & ((1ULL << 55) - 1)));
	return 0;
}

static int cmd_mincore(int argc, char **argv)
{
	long psz = sysconf(_SC_PAGESIZE);
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	unsigned char *vec;
	size_t pages, res = 0, i;
	void *p;

	if (fd < 0 || fstat(fd, &st)) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	pages = (st.st_size + psz - 1) / psz;
	p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	vec = malloc(pages);
	if (mincore(p, st.st_size, vec)) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	for (i = 0; i < pages; i++)
		res += vec[i] & 1;
	printf("%zu %zu\n", res, pages);
	return 0;
}

/* ---- fs-verity --------------------------------------------------------- */

static int cmd_verity_enable(int argc, char **argv)
{
	int i, rc = 0;

	for (i = 1; i < argc; i++) {
		struct fsverity_enable_arg arg = {
			.version = 1,
			.hash_algorithm = FS_VERITY_HASH_ALG_SHA256,
			.block_size = 4096,
		};
		int fd = open(argv[i], O_RDONLY);

		if (fd < 0 || (ioctl(fd, FS_IOC_ENABLE_VERITY, &arg) && errno != EEXIST)) {
			printf("ERR %s %s\n", argv[i], ename(errno));
			rc = 1;
		}
		if (fd >= 0)
			close(fd);
	}
	return rc;
}

static int cmd_verity_measure(int argc, char **argv)
{
	struct {
		struct fsverity_digest d;
		unsigned char buf[64];
	} m = { .d.digest_size = 64 };
	int fd = open(argv[1], O_RDONLY);

	if (fd < 0 || ioctl(fd, FS_IOC_MEASURE_VERITY, &m)) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	for (int i = 0; i < m.d.digest_size; i++)
		printf("%02x", m.d.digest[i]);
	printf("\n");
	return 0;
}

/* ---- small ones -------------------------------------------------------- */

static int cmd_sha(int argc, char **argv)
{
	char h[65];
	off_t size;
	int e = sha_read(argv[1], h, &size);

	if (e) {
		printf("ERR %s\n", ename(e));
		return 1;
	}
	printf("%s\n", h);
	return 0;
}

/* One pread of @len bytes at @off into an aligned buffer: "OK" or "ERR ENAME". */
static const char *pread_result(int fd, size_t len, off_t off)
{
	static char buf[8192] __attribute__((aligned(4096)));

	return pread(fd, buf, len, off) >= 0 ? "OK" : ename(errno);
}

static int cmd_odirect(int argc, char **argv)
{
	int fd = open(argv[1], O_RDONLY | O_DIRECT);
	const char *a, *b, *c;
	static char eb[2][32];
	int fl;

	if (fd < 0) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	a = pread_result(fd, 4096, 0);
	fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl & ~O_DIRECT);
	b = pread_result(fd, 1, 1);
	if (strcmp(b, "OK"))
		b = (snprintf(eb[0], sizeof(eb[0]), "ERR %s", b), eb[0]);
	fcntl(fd, F_SETFL, fl | O_DIRECT);
	c = pread_result(fd, 1, 1);
	if (strcmp(c, "OK"))
		c = (snprintf(eb[1], sizeof(eb[1]), "ERR %s", c), eb[1]);
	printf("%s%s %s %s\n", strcmp(a, "OK") ? "ERR " : "", a, b, c);
	close(fd);
	return 0;
}

static int cmd_splice(int argc, char **argv)
{
	char h[65];
	int e = sha_splice(argv[1], h);

	if (e) {
		printf("ERR %s\n", ename(e));
		return 1;
	}
	printf("%s\n", h);
	return 0;
}

static int cmd_getxattr(int argc, char **argv)
{
	static unsigned char v[1 << 16];
	ssize_t n = lgetxattr(argv[1], argv[2], v, sizeof(v));

	if (n < 0) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	for (ssize_t i = 0; i < n; i++)
		printf("%02x", v[i]);
	printf("\n");
	return 0;
}

static int cmd_listxattr(int argc, char **argv)
{
	static char names[1 << 16];
	ssize_t n = llistxattr(argv[1], names, sizeof(names));

	if (n < 0) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	for (char *p = names; p < names + n; p += strlen(p) + 1)
		printf("%s\n", p);
	return 0;
}

static int cmd_stat(int argc, char **argv)
{
	struct stat st;

	if (lstat(argv[1], &st)) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	printf("%llu %lu %o %u %u %lld\n", (unsigned long long)st.st_ino,
	       (unsigned long)st.st_nlink, st.st_mode, st.st_uid, st.st_gid,
	       (long long)st.st_size);
	return 0;
}

static int cmd_statfs(int argc, char **argv)
{
	struct statfs s;

	if (statfs(argv[1], &s)) {
		printf("ERR %s\n", ename(errno));
		return 1;
	}
	printf("type=%lx bsize=%ld blocks=%llu files=%llu namelen=%ld\n",
	       (unsigned long)s.f_type, (long)s.f_bsize, (unsigned long long)s.f_blocks,
	       (unsigned long long)s.f_files, (long)s.f_namelen);
	return 0;
}

/* Run a program as another user (no supplementary groups), e.g. for ACL and capability checks. */
static int cmd_as(int argc, char **argv)
{
	uid_t uid = atoi(argv[1]);
	gid_t gid = atoi(argv[2]);

	if (setgroups(0, NULL) || setresgid(gid, gid, gid) || setresuid(uid, uid, uid)) {
		printf("ERR %s setuid\n", ename(errno));
		return 1;
	}
	execv(argv[3], argv + 3);
	printf("ERR %s exec\n", ename(errno));
	return 1;
}

/* new mount API; constants from <linux/mount.h>, which clashes with glibc's */
#define UBT_FSCONFIG_SET_FLAG	0
#define UBT_FSCONFIG_SET_STRING	1
#define UBT_FSCONFIG_CMD_CREATE	6
#define UBT_MOVE_MOUNT_F_EMPTY_PATH 0x4

static void drain_messages(int fd)
{
	char msg[1024];
	ssize_t n;

	while ((n = read(fd, msg, sizeof(msg) - 1)) > 0) {
		msg[n] = 0;
		printf("MSG %s\n", msg);
	}
}

static int cmd_fsmount(int argc, char **argv)
{
	const char *target = NULL;
	int fd, mfd, i, rw = 0;

	fd = syscall(SYS_fsopen, "unionblob", 0);
	if (fd < 0) {
		printf("ERR %s fsopen\n", ename(errno));
		return 1;
	}
	if (syscall(SYS_fsconfig, fd, UBT_FSCONFIG_SET_STRING, "source", argv[1], 0))
		goto fail;
	for (i = 2; i < argc; i++) {
		char *eq;

		if (!strcmp(argv[i], "--rw")) {
			rw = 1;
			continue;
		}
		if (!strcmp(argv[i], "--target") && i + 1 < argc) {
			target = argv[++i];
			continue;
		}
		eq = strchr(argv[i], '=');
		if (eq) {
			*eq = 0;
			if (syscall(SYS_fsconfig, fd, UBT_FSCONFIG_SET_STRING, argv[i], eq + 1, 0))
				goto fail;
		} else if (syscall(SYS_fsconfig, fd, UBT_FSCONFIG_SET_FLAG, argv[i], NULL, 0)) {
			goto fail;
		}
	}
	if (syscall(SYS_fsconfig, fd, UBT_FSCONFIG_SET_FLAG, rw ? "rw" : "ro", NULL, 0))
		goto fail;
	if (syscall(SYS_fsconfig, fd, UBT_FSCONFIG_CMD_CREATE, NULL, NULL, 0))
		goto fail;
	mfd = syscall(SYS_fsmount, fd, 0, 0);
	if (mfd < 0)
		goto fail;
	if (target && syscall(SYS_move_mount, mfd, "", AT_FDCWD, target,
			      UBT_MOVE_MOUNT_F_EMPTY_PATH))
		goto fail;
	printf("OK\n");
	drain_messages(fd);
	return 0;
fail:
	printf("ERR %s\n", ename(errno));
	drain_messages(fd);
	return 1;
}

/*
 * An idmapped mount of SRC at TARGET (open_tree, mount_setattr MOUNT_ATTR_IDMAP, move_mount):
 * files the filesystem says belong to FROM..FROM+COUNT-1 appear as TO..TO+COUNT-1 (uids and
 * gids alike), others as the overflow id. The mapping is a user namespace a child holds.
 */
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#define UBT_OPEN_TREE_CLONE	1
#define UBT_MOUNT_ATTR_IDMAP	0x00100000ULL

struct ubt_mount_attr {
	uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int cmd_idmap(int argc, char **argv)
{
	int ready[2], release[2], nsfd = -1, tree = -1;
	char path[64], map[96], c = 0;
	struct ubt_mount_attr attr = { .attr_set = UBT_MOUNT_ATTR_IDMAP };
	const char *step = "userns";
	pid_t pid;

	if (pipe(ready) || pipe(release)) {
		printf("ERR %s pipe\n", ename(errno));
		return 1;
	}
	pid = fork();
	if (pid == 0) {
		close(ready[0]);
		close(release[1]);
		if (unshare(CLONE_NEWUSER))
			_exit(1);
		if (write(ready[1], &c, 1) != 1 || read(release[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(ready[1]);
	close(release[0]);
	if (pid < 0 || read(ready[0], &c, 1) != 1)
		goto fail;
	snprintf(map, sizeof(map), "%s %s %s\n", argv[3], argv[4], argv[5]);
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	step = "uid_map";
	if (write_file(path, map))
		goto fail;
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
	step = "gid_map";
	if (write_file(path, map))
		goto fail;
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
	step = "ns/user";
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		goto fail;
	step = "open_tree";
	tree = syscall(SYS_open_tree, AT_FDCWD, argv[1], UBT_OPEN_TREE_CLONE | O_CLOEXEC);
	if (tree < 0)
		goto fail;
	attr.userns_fd = nsfd;
	step = "mount_setattr";
	if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof(attr)))
		goto fail;
	step = "move_mount";
	if (syscall(SYS_move_mount, tree, "", AT_FDCWD, argv[2], UBT_MOVE_MOUNT_F_EMPTY_PATH))
		goto fail;
	close(release[1]);
	waitpid(pid, NULL, 0);
	printf("OK\n");
	return 0;
fail:
	printf("ERR %s %s\n", ename(errno), step);
	close(release[1]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	return 1;
}

/* ---- bench helpers ----------------------------------------------------- */

#include <time.h>

static int cmd_now(int argc, char **argv)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	printf("%lld\n", (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
	return 0;
}

static long long walk_files, walk_bytes;

/* readdir + lstat + listxattr of everything; with @read, also read every regular file. */
static void bench_walk(const char *path, int depth, int read_data)
{
	static char buf[1 << 16];
	struct stat st;
	struct dirent *de;
	DIR *d;

	if (lstat(path, &st))
		return;
	walk_files++;
	if (!read_data)
		llistxattr(path, buf, sizeof(buf));
	if (S_ISREG(st.st_mode) && read_data) {
		int fd = open(path, O_RDONLY);
		ssize_t n;

		if (fd >= 0) {
			while ((n = read(fd, buf, sizeof(buf))) > 0)
				walk_bytes += n;
			close(fd);
		}
	}
	if (!S_ISDIR(st.st_mode) || depth > 200)
		return;
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		char *child;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		child = malloc(strlen(path) + strlen(de->d_name) + 2);
		sprintf(child, "%s/%s", path, de->d_name);
		bench_walk(child, depth + 1, read_data);
		free(child);
	}
	closedir(d);
}

static int cmd_benchwalk(int argc, char **argv)
{
	struct timespec a, b;
	int read_data = !strcmp(argv[0], "readall");

	clock_gettime(CLOCK_MONOTONIC, &a);
	bench_walk(argv[1], 0, read_data);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("entries=%lld bytes=%lld us=%lld\n", walk_files, walk_bytes,
	       (long long)(b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
		int args;
	} cmds[] = {
		{ "walk", cmd_walk, 1 }, { "dirtest", cmd_dirtest, 1 },
		{ "sha", cmd_sha, 1 }, { "splice", cmd_splice, 1 }, { "odirect", cmd_odirect, 1 },
		{ "pfn", cmd_pfn, 1 }, { "mincore", cmd_mincore, 1 },
		{ "verity-enable", cmd_verity_enable, 1 },
		{ "verity-measure", cmd_verity_measure, 1 },
		{ "getxattr", cmd_getxattr, 2 }, { "listxattr", cmd_listxattr, 1 },
		{ "stat", cmd_stat, 1 }, { "statfs", cmd_statfs, 1 },
		{ "fsmount", cmd_fsmount, 1 }, { "manifest", cmd_manifest, 2 },
		{ "idmap", cmd_idmap, 5 },
		{ "as", cmd_as, 3 }, { "now", cmd_now, 0 },
		{ "statwalk", cmd_benchwalk, 1 }, { "readall", cmd_benchwalk, 1 },
		{ "corrupt", cmd_corrupt, 3 }, { "handles", cmd_handles, 1 },
		{ "fh", cmd_fh, 1 }, { "byfh", cmd_byfh, 3 },
	};

	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	for (size_t i = 0; argc > 1 && i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name)) {
			if (argc - 2 < cmds[i].args)
				break;
			return cmds[i].fn(argc - 1, argv + 1);
		}
	fprintf(stderr, "usage: see the comment at the top of ubt.c\n");
	return 2;
}
