#include "fsverity.h"

#include <cerrno>
#include <fcntl.h>
#include <linux/fsverity.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "syserror.h"

namespace {

constexpr unsigned kBlockSize = 4096;
constexpr unsigned kMaxDigest = 64;  // FS_VERITY_MAX_DIGEST_SIZE (SHA-512)

// Read-only is what both ioctls want: enabling refuses a file open for writing (ETXTBSY).
int open_readonly(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    throw SysError{"open", "open " + path, err, path, "", {}};
  }
  return fd;
}

[[noreturn]] void ioctl_failed(const char* name, const std::string& path, int err) {
  SysError e{"ioctl", std::string(name) + " " + path, err, path, "", {}};
  if (err == ENOTTY) e.hint = "the filesystem does not support fs-verity";
  // The filesystem has fs-verity but this one lacks the feature, or the kernel lacks CONFIG_FS_VERITY.
  if (err == EOPNOTSUPP) e.hint = "no fs-verity here: not enabled on this filesystem (mkfs/tune2fs -O verity) or not built into the kernel";
  throw e;
}

bool no_verity(int err) { return err == ENODATA || err == ENOTTY || err == EOPNOTSUPP; }

}  // namespace

bool fsverity_enable(const std::string& path) {
  int fd = open_readonly(path);
  fsverity_enable_arg arg{};
  arg.version = 1;
  arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
  arg.block_size = kBlockSize;
  // Builds the Merkle tree: reads the whole file, in this thread.
  int r = ioctl(fd, FS_IOC_ENABLE_VERITY, &arg);
  int err = errno;
  close(fd);
  if (r == 0) return true;
  if (err == EEXIST) return false;
  ioctl_failed("FS_IOC_ENABLE_VERITY", path, err);
}

std::optional<std::vector<uint8_t>> fsverity_measure(const std::string& path) {
  int fd = open_readonly(path);
  // struct fsverity_digest ends in a flexible array: give it room for the largest digest.
  alignas(fsverity_digest) uint8_t buf[sizeof(fsverity_digest) + kMaxDigest] = {};
  auto* d = reinterpret_cast<fsverity_digest*>(buf);
  d->digest_size = kMaxDigest;
  int r = ioctl(fd, FS_IOC_MEASURE_VERITY, d);
  int err = errno;
  close(fd);
  if (r == 0) return std::vector<uint8_t>(d->digest, d->digest + d->digest_size);
  if (no_verity(err)) return std::nullopt;
  ioctl_failed("FS_IOC_MEASURE_VERITY", path, err);
}
