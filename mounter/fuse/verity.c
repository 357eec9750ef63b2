/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fs-verity file digest over sha256_buf(): sha256.c's in the FUSE server,
 * which needs nothing but libfuse3; OpenSSL's (SHA-NI) in the Node addon,
 * which builds this file too (mounter/addon/verityhash.cc).
 */
#include "verity.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fsverity.h>

/* ---- fs-verity Merkle tree, built level by level while streaming ------- */

#define VBLOCK 4096
#define HASHES_PER_BLOCK (VBLOCK / SHA256_SIZE)
#define MAX_LEVELS 8	/* 128^8 blocks: far beyond any file size */

struct merkle {
	int levels;			/* hash levels above the data */
	uint8_t block[MAX_LEVELS + 1][VBLOCK];	/* the block being filled per level */
	size_t fill[MAX_LEVELS + 1];
};

static int levels_for(uint64_t size)
{
	uint64_t n = (size + VBLOCK - 1) / VBLOCK;
	int levels = 0;

	while (n > 1) {
		n = (n + HASHES_PER_BLOCK - 1) / HASHES_PER_BLOCK;
		levels++;
	}
	return levels;
}

/* Add one hash to level lvl; a full block is hashed up into the next level. */
static void merkle_push(struct merkle *m, int lvl, const uint8_t hash[SHA256_SIZE])
{
	uint8_t up[SHA256_SIZE];

	memcpy(m->block[lvl] + m->fill[lvl], hash, SHA256_SIZE);
	m->fill[lvl] += SHA256_SIZE;
	if (m->fill[lvl] == VBLOCK && lvl < m->levels) {
		sha256_buf(m->block[lvl], VBLOCK, up);
		m->fill[lvl] = 0;
		merkle_push(m, lvl + 1, up);
	}
}

static void merkle_data_block(struct merkle *m, const uint8_t *data, size_t n)
{
	uint8_t block[VBLOCK], hash[SHA256_SIZE];

	if (n == VBLOCK) {	/* whole blocks are hashed where they are */
		sha256_buf(data, VBLOCK, hash);
	} else {
		memcpy(block, data, n);
		memset(block + n, 0, VBLOCK - n);
		sha256_buf(block, VBLOCK, hash);
	}
	merkle_push(m, 0, hash);
}

/* Pads and hashes every partial level; the root is what reaches the top. */
static void merkle_root(struct merkle *m, uint64_t size, uint8_t root[SHA256_SIZE])
{
	uint8_t hash[SHA256_SIZE];
	int lvl;

	if (size == 0) {
		memset(root, 0, SHA256_SIZE);
		return;
	}
	for (lvl = 0; lvl < m->levels; lvl++) {
		if (!m->fill[lvl])
			continue;
		memset(m->block[lvl] + m->fill[lvl], 0, VBLOCK - m->fill[lvl]);
		sha256_buf(m->block[lvl], VBLOCK, hash);
		m->fill[lvl] = 0;
		merkle_push(m, lvl + 1, hash);
	}
	memcpy(root, m->block[m->levels], SHA256_SIZE);
}

/* The 256-byte fsverity_descriptor whose SHA-256 is the file digest. */
static void descriptor_digest(uint64_t size, const uint8_t root[SHA256_SIZE],
			      uint8_t out[SHA256_SIZE])
{
	uint8_t d[256];
	int i;

	memset(d, 0, sizeof(d));
	d[0] = 1;	/* version */
	d[1] = 1;	/* FS_VERITY_HASH_ALG_SHA256 */
	d[2] = 12;	/* log2 of the Merkle block size */
	for (i = 0; i < 8; i++)
		d[8 + i] = (uint8_t)(size >> (8 * i));
	memcpy(d + 16, root, SHA256_SIZE);
	sha256_buf(d, sizeof(d), out);
}

/* Not calloc: zeroing 36 KiB of blocks costs more than hashing a small file. */
static struct merkle *merkle_new(uint64_t size)
{
	struct merkle *m = malloc(sizeof(*m));

	if (m) {
		m->levels = levels_for(size);
		memset(m->fill, 0, sizeof(m->fill));
	}
	return m;
}

void verity_digest_buf(const void *data, uint64_t size, uint8_t out[SHA256_SIZE])
{
	struct merkle *m = merkle_new(size);
	uint8_t root[SHA256_SIZE];
	uint64_t off;

	if (!m)
		abort();
	for (off = 0; off < size; off += VBLOCK)
		merkle_data_block(m, (const uint8_t *)data + off,
				  size - off < VBLOCK ? size - off : VBLOCK);
	merkle_root(m, size, root);
	free(m);
	descriptor_digest(size, root, out);
}

int verity_digest_fd(int fd, uint8_t out[SHA256_SIZE])
{
	enum { CHUNK = 64 * VBLOCK };
	struct merkle *m;
	uint8_t *buf, root[SHA256_SIZE];
	struct stat st;
	uint64_t off = 0, size;
	int err = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	size = (uint64_t)st.st_size;
	m = merkle_new(size);
	buf = malloc(CHUNK);
	if (!m || !buf) {
		err = -ENOMEM;
		goto out;
	}
	while (off < size) {
		size_t want = size - off < CHUNK ? size - off : CHUNK, got = 0, i;
		ssize_t n;

		while (got < want) {
			n = pread(fd, buf + got, want - got, (off_t)(off + got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {	/* shrank under us: not the object we expected */
				err = n < 0 ? -errno : -EIO;
				goto out;
			}
			got += (size_t)n;
		}
		for (i = 0; i < want; i += VBLOCK)
			merkle_data_block(m, buf + i, want - i < VBLOCK ? want - i : VBLOCK);
		off += want;
	}
	merkle_root(m, size, root);
	descriptor_digest(size, root, out);
out:
	free(buf);
	free(m);
	return err;
}

int verity_measure_fd(int fd, uint8_t out[SHA256_SIZE])
{
	struct {
		struct fsverity_digest d;
		uint8_t buf[64];
	} req;

	memset(&req, 0, sizeof(req));
	req.d.digest_size = sizeof(req.buf);
	if (ioctl(fd, FS_IOC_MEASURE_VERITY, &req) < 0) {
		if (errno == ENODATA || errno == ENOTTY || errno == EOPNOTSUPP ||
		    errno == EINVAL)
			return 0;
		return -errno;
	}
	if (req.d.digest_algorithm != FS_VERITY_HASH_ALG_SHA256 ||
	    req.d.digest_size != SHA256_SIZE)
		return 0;	/* measured with another hash: cannot compare, treat as absent */
	memcpy(out, req.d.digest, SHA256_SIZE);
	return 1;
}
