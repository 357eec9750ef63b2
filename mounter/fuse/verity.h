/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fs-verity file digests for the FUSE server (SPEC §7): SHA-256, 4096-byte
 * Merkle blocks, no salt.  Used when verity=require meets an object whose
 * filesystem cannot measure it for us.
 */
#ifndef UNIONBLOB_VERITY_H
#define UNIONBLOB_VERITY_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_SIZE 32

struct sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	size_t fill;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t n);
void sha256_final(struct sha256 *s, uint8_t out[SHA256_SIZE]);

/* Digest of the whole file behind fd (read with pread).  0 or -errno. */
int verity_digest_fd(int fd, uint8_t out[SHA256_SIZE]);

/* Digest of a buffer; for the self-test against format/verity.ts. */
void verity_digest_buf(const void *data, uint64_t size, uint8_t out[SHA256_SIZE]);

/*
 * The digest the kernel keeps for fd if its filesystem has fs-verity on it:
 * 1 when measured, 0 when the file has no verity (or the filesystem cannot
 * tell), -errno on real errors.
 */
int verity_measure_fd(int fd, uint8_t out[SHA256_SIZE]);

#endif
