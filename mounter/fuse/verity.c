/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SHA-256 (FIPS 180-4) and the fs-verity file digest built on it.  Written
 * here rather than linked from a crypto library so the FUSE server needs
 * nothing but libfuse3.
 */
#include "verity.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fsverity.h>

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; k = h[7];
	for (i = 0; i < 64; i++) {
		t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

void sha256_init(struct sha256 *s)
{
	static const uint32_t iv[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};
	memcpy(s->h, iv, sizeof(iv));
	s->len = 0;
	s->fill = 0;
}

void sha256_update(struct sha256 *s, const void *data, size_t n)
{
	const uint8_t *p = data;

	s->len += n;
	if (s->fill) {
		size_t take = 64 - s->fill < n ? 64 - s->fill : n;
		memcpy(s->buf + s->fill, p, take);
		s->fill += take;
		p += take;
		n -= take;
		if (s->fill < 64)
			return;
		sha256_block(s->h, s->buf);
		s->fill = 0;
	}
	for (; n >= 64; p += 64, n -= 64)
		sha256_block(s->h, p);
	memcpy(s->buf, p, n);
	s->fill = n;
}

void sha256_final(struct sha256 *s, uint8_t out[SHA256_SIZE])
{
	uint64_t bits = s->len * 8;
	uint8_t pad = 0x80, zero = 0, lenbe[8];
	int i;

	sha256_update(s, &pad, 1);
	while (s->fill != 56)
		sha256_update(s, &zero, 1);
	for (i = 0; i < 8; i++)
		lenbe[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha256_update(s, lenbe, 8);
	for (i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(s->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)s->h[i];
	}
}

static void sha256_of(const void *data, size_t n, uint8_t out[SHA256_SIZE])
{
	struct sha256 s;

	sha256_init(&s);
	sha256_update(&s, data, n);
	sha256_final(&s, out);
}

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
		sha256_of(m->block[lvl], VBLOCK, up);
		m->fill[lvl] = 0;
		merkle_push(m, lvl + 1, up);
	}
}

static void merkle_data_block(struct merkle *m, const uint8_t *data, size_t n)
{
	uint8_t block[VBLOCK], hash[SHA256_SIZE];

	memcpy(block, data, n);
	memset(block + n, 0, VBLOCK - n);
	sha256_of(block, VBLOCK, hash);
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
		sha256_of(m->block[lvl], VBLOCK, hash);
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
	sha256_of(d, sizeof(d), out);
}

static struct merkle *merkle_new(uint64_t size)
{
	struct merkle *m = calloc(1, sizeof(*m));

	if (m)
		m->levels = levels_for(size);
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
