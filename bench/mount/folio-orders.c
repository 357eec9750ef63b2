/* SPDX-License-Identifier: Apache-2.0 */
/*
 * folio-orders FILE...: how the page cache holds each FILE, as a count of
 * folios per order (order 0 = 4 KiB, order 4 = 64 KiB, ...).  Maps the file,
 * touches every page so it is cached and mapped, then looks each page's PFN
 * up in /proc/self/pagemap and its flags in /proc/kpageflags: a folio is a
 * head page and the tail pages after it.  Needs root (PFNs are hidden
 * otherwise).  Build: cc -O2 -o folio-orders folio-orders.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096UL
#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)
#define KPF_COMPOUND_TAIL 16
#define MAX_ORDER 20

/* Where the touched bytes go, so the reads are not optimised away. */
static volatile unsigned char sink;

static int order_of(unsigned long pages)
{
	int o = 0;

	while ((1UL << o) < pages)
		o++;
	return o;
}

/* Flags of the page at virtual address va, or -1 when it is not mapped. */
static int64_t page_flags(int pagemap, int kpageflags, uintptr_t va)
{
	uint64_t entry, flags;

	if (pread(pagemap, &entry, 8, (off_t)(va / PAGE * 8)) != 8 || !(entry & PM_PRESENT))
		return -1;
	if (pread(kpageflags, &flags, 8, (off_t)((entry & PM_PFN_MASK) * 8)) != 8)
		return -1;
	return (int64_t)(flags & INT64_MAX);
}

static int report(const char *name, int pagemap, int kpageflags)
{
	unsigned long hist[MAX_ORDER + 1] = { 0 }, run = 0, unmapped = 0, n, i;
	const unsigned char *p;
	struct stat st;
	int fd, o;

	fd = open(name, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) || st.st_size == 0) {
		fprintf(stderr, "folio-orders: %s: cannot open or empty\n", name);
		return 1;
	}
	n = (st.st_size + PAGE - 1) / PAGE;
	p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		perror("folio-orders: mmap");
		return 1;
	}
	for (i = 0; i < n; i++)
		sink ^= p[i * PAGE];
	for (i = 0; i < n; i++) {
		int64_t f = page_flags(pagemap, kpageflags, (uintptr_t)p + i * PAGE);

		if (f < 0) {
			unmapped++;
			continue;
		}
		if (f >> KPF_COMPOUND_TAIL & 1) {
			run++;
			continue;
		}
		if (run)
			hist[order_of(run)]++;
		run = 1;
	}
	if (run)
		hist[order_of(run)]++;
	printf("%s: %lu pages", name, n);
	if (unmapped)
		printf(" (%lu not mapped)", unmapped);
	for (o = 0; o <= MAX_ORDER; o++)
		if (hist[o])
			printf(" order%d=%lu", o, hist[o]);
	printf("\n");
	munmap((void *)p, st.st_size);
	return 0;
}

int main(int argc, char **argv)
{
	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	int kpageflags = open("/proc/kpageflags", O_RDONLY);
	int i, err = 0;

	if (argc < 2 || pagemap < 0 || kpageflags < 0) {
		fprintf(stderr, "usage (as root): folio-orders FILE...\n");
		return 2;
	}
	for (i = 1; i < argc; i++)
		err |= report(argv[i], pagemap, kpageflags);
	return err;
}
