// SPDX-License-Identifier: Apache-2.0
/*
 * lookup: latency of path lookups, one fstatat() per path, each timed on its own with
 * CLOCK_MONOTONIC (bench/scale). Paths come from a file, one per line, relative to DIR.
 *
 *   lookup [--cold] [--ends] DIR PATHS_FILE
 *
 * --cold: sync and drop the page, dentry and inode caches first (every lookup then walks the
 * filesystem from its root's children down).
 * --ends: per path, fstatat() + open() + pread() of the first bytes and of the file's last
 * block + close(), timed as one; prints "END PATH SIZE HEAD|TAIL" per path first (HEAD and
 * TAIL: the first line of what was read, for the caller to check against what it wrote).
 * Last (or only) line:
 *   n=N errors=N p50_ns=T p90_ns=T p99_ns=T max_ns=T mean_ns=T
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

static void drop_caches(void)
{
	FILE *f;

	sync();
	f = fopen("/proc/sys/vm/drop_caches", "w");
	if (!f || fputs("3", f) < 0 || fclose(f)) {
		perror("drop_caches");
		exit(1);
	}
}

/* The first line of up to 63 bytes at off into out (NUL-terminated); -1 on a read error. */
static int read_line_at(int fd, off_t off, char *out)
{
	ssize_t r = pread(fd, out, 63, off);

	if (r < 0)
		return -1;
	out[r] = 0;
	out[strcspn(out, "\n")] = 0;
	return 0;
}

/* --ends for one path: stat, open, the head and the last block; 0 when all of it worked. */
static int check_ends(int dfd, const char *p)
{
	char head[64], tail[64];
	struct stat st;
	int fd, bad;

	if (fstatat(dfd, p, &st, AT_SYMLINK_NOFOLLOW))
		return -1;
	fd = openat(dfd, p, O_RDONLY);
	if (fd < 0)
		return -1;
	bad = read_line_at(fd, 0, head) ||
	      read_line_at(fd, st.st_size ? (st.st_size - 1) / 4096 * 4096 : 0, tail);
	close(fd);
	if (!bad)
		printf("END %s %lld %s|%s\n", p, (long long)st.st_size, head, tail);
	return bad ? -1 : 0;
}

/* Nearest-rank percentile of the sorted samples. */
static long long pct(const long long *s, size_t n, int p)
{
	size_t r = (n * p + 99) / 100;

	return s[r ? r - 1 : 0];
}

int main(int argc, char **argv)
{
	int cold = 0, ends = 0;
	char **paths = NULL, line[4096];
	size_t n = 0, cap = 0, errors = 0;
	long long *ns, sum = 0;
	FILE *f;
	int dfd;

	for (; argc > 1 && !strncmp(argv[1], "--", 2); argc--, argv++) {
		if (!strcmp(argv[1], "--cold"))
			cold = 1;
		else if (!strcmp(argv[1], "--ends"))
			ends = 1;
		else
			argc = 0;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: lookup [--cold] [--ends] DIR PATHS_FILE\n");
		return 2;
	}
	f = fopen(argv[2], "r");
	if (!f) {
		perror(argv[2]);
		return 1;
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			paths = realloc(paths, cap * sizeof(*paths));
		}
		paths[n++] = strdup(line);
	}
	fclose(f);
	if (!n) {
		fprintf(stderr, "lookup: no paths in %s\n", argv[2]);
		return 1;
	}
	ns = malloc(n * sizeof(*ns));
	if (cold)
		drop_caches();
	dfd = open(argv[1], O_RDONLY | O_DIRECTORY);
	if (dfd < 0) {
		perror(argv[1]);
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		long long t0 = now_ns();

		if (ends ? check_ends(dfd, paths[i]) : fstatat(dfd, paths[i], &st, AT_SYMLINK_NOFOLLOW))
			errors++;
		ns[i] = now_ns() - t0;
		sum += ns[i];
	}
	qsort(ns, n, sizeof(*ns), cmp_ll);
	printf("n=%zu errors=%zu p50_ns=%lld p90_ns=%lld p99_ns=%lld max_ns=%lld mean_ns=%lld\n", n, errors,
	       pct(ns, n, 50), pct(ns, n, 90), pct(ns, n, 99), ns[n - 1], sum / (long long)n);
	return errors ? 3 : 0;
}
