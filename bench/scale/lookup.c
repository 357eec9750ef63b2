// SPDX-License-Identifier: Apache-2.0
/*
 * lookup: latency of path lookups, one fstatat() per path, each timed on its own with
 * CLOCK_MONOTONIC (bench/scale). Paths come from a file, one per line, relative to DIR.
 *
 *   lookup [--cold] DIR PATHS_FILE
 *
 * --cold: sync and drop the page, dentry and inode caches first (every lookup then walks the
 * filesystem from its root's children down).  Prints one line:
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

/* Nearest-rank percentile of the sorted samples. */
static long long pct(const long long *s, size_t n, int p)
{
	size_t r = (n * p + 99) / 100;

	return s[r ? r - 1 : 0];
}

int main(int argc, char **argv)
{
	int cold = argc > 1 && !strcmp(argv[1], "--cold");
	char **paths = NULL, line[4096];
	size_t n = 0, cap = 0, errors = 0;
	long long *ns, sum = 0;
	FILE *f;
	int dfd;

	if (argc != 3 + cold) {
		fprintf(stderr, "usage: lookup [--cold] DIR PATHS_FILE\n");
		return 2;
	}
	f = fopen(argv[2 + cold], "r");
	if (!f) {
		perror(argv[2 + cold]);
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
		fprintf(stderr, "lookup: no paths in %s\n", argv[2 + cold]);
		return 1;
	}
	ns = malloc(n * sizeof(*ns));
	if (cold)
		drop_caches();
	dfd = open(argv[1 + cold], O_RDONLY | O_DIRECTORY);
	if (dfd < 0) {
		perror(argv[1 + cold]);
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		long long t0 = now_ns();

		if (fstatat(dfd, paths[i], &st, AT_SYMLINK_NOFOLLOW))
			errors++;
		ns[i] = now_ns() - t0;
		sum += ns[i];
	}
	qsort(ns, n, sizeof(*ns), cmp_ll);
	printf("n=%zu errors=%zu p50_ns=%lld p90_ns=%lld p99_ns=%lld max_ns=%lld mean_ns=%lld\n", n, errors,
	       pct(ns, n, 50), pct(ns, n, 90), pct(ns, n, 99), ns[n - 1], sum / (long long)n);
	return errors ? 3 : 0;
}
