// fs-verity digests computed here for the compiler (compiler/store.ts): the Merkle tree of
// mounter/fuse/verity.c over OpenSSL's SHA-256, the copy inside node itself (SHA-NI where the
// CPU has it). node:crypto costs ~4.5 us per 4 KiB block called from JavaScript, where this is
// ~2.7: for fs-verity, whose every block is one hash call, the call is as dear as the hashing.
#pragma once

#include <cstddef>
#include <cstdint>

constexpr size_t kVerityBlock = 4096;

// SHA-256 of each of `blocks` whole 4096-byte blocks of data into out (32 bytes per block): the
// Merkle tree's first level, for format/verity.ts's streaming hasher. false if OpenSSL failed.
bool verity_block_hashes(const uint8_t* data, size_t blocks, uint8_t* out);

// Digest of data[0, len) into out[0, 32). false if OpenSSL failed (it does not, short of memory).
bool verity_digest_memory(const uint8_t* data, size_t len, uint8_t* out);
