/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fs-verity file digests for the FUSE server (SPEC §7): SHA-256, 4096-byte
 * Merkle blocks, no salt.  Used when verity=require meets an object whose
 * filesystem cannot measure it for us.
 */
#ifndef UNIONBLOB_VERITY_H
#define UNIONBLOB_VERITY_H

#include "sha256.h"

#ifdef __cplusplus
extern "C" {
#endif

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

#ifdef __cplusplus
}
#endif

#endif
