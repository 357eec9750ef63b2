/* SPDX-License-Identifier: Apache-2.0 */
/* SHA-256 (FIPS 180-4): the FUSE server's fs-verity digests, the kernel test helper's sums. */
#ifndef UNIONBLOB_SHA256_H
#define UNIONBLOB_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

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

/* One-shot.  verity.c hashes with this only, so that a program can link its own (the addon: OpenSSL's). */
void sha256_buf(const void *data, size_t n, uint8_t out[SHA256_SIZE]);

#ifdef __cplusplus
}
#endif

#endif
