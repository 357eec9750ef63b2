// See verityhash.h. The symbols node's binary exports are OpenSSL's: this links against none,
// so the addon hashes with the library node already loaded (headers from node's include dir).
#include "verityhash.h"

#include <openssl/evp.h>

#include "verity.h"

namespace {

// One context per thread (the store's writer thread and the main thread hash at once); the
// digest is fetched once, not looked up by name per call as EVP_sha256() would be.
struct Sha256 {
  EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool failed = false;
  ~Sha256() {
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
  }
};

thread_local Sha256 sha;

}  // namespace

// The one hash verity.c calls (declared in mounter/fuse/sha256.h).
extern "C" void sha256_buf(const void* data, size_t n, uint8_t out[SHA256_SIZE]) {
  unsigned int len = 0;
  if (!sha.md || !sha.ctx || EVP_DigestInit_ex2(sha.ctx, sha.md, nullptr) != 1 || EVP_DigestUpdate(sha.ctx, data, n) != 1 ||
      EVP_DigestFinal_ex(sha.ctx, out, &len) != 1 || len != SHA256_SIZE)
    sha.failed = true;
}

bool verity_block_hashes(const uint8_t* data, size_t blocks, uint8_t* out) {
  sha.failed = false;
  for (size_t b = 0; b < blocks; b++) sha256_buf(data + b * kVerityBlock, kVerityBlock, out + b * SHA256_SIZE);
  return !sha.failed;
}

bool verity_digest_memory(const uint8_t* data, size_t len, uint8_t* out) {
  sha.failed = false;
  verity_digest_buf(data, len, out);
  return !sha.failed;
}
