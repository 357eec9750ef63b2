#include "objectfile.h"

#include <atomic>
#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd.h"
#include "syserror.h"

namespace {

[[noreturn]] void failed(const char* syscall, const std::string& path, int err) {
  throw SysError{syscall, std::string(syscall) + " " + path, err, path, "", {}};
}

// linkat(fd, "", ...) with AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH (root has it) and walks no
// path; without it the kernel answers ENOENT and we link /proc/self/fd/N with AT_SYMLINK_FOLLOW,
// which needs no capability but walks procfs on every call (a third of linkat's time on tmpfs).
// Turned off for the process once AT_EMPTY_PATH failed where the /proc way worked.
std::atomic<bool> empty_path_links{true};

bool link_unnamed(int fd, int dirfd, const std::string& name) {
  if (empty_path_links.load(std::memory_order_relaxed)) {
    if (linkat(fd, "", dirfd, name.c_str(), AT_EMPTY_PATH) == 0) return true;
    if (errno == EEXIST) return false;
    if (errno != ENOENT && errno != EPERM) failed("linkat", name, errno);
  }
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  if (linkat(AT_FDCWD, self.c_str(), dirfd, name.c_str(), AT_SYMLINK_FOLLOW) == 0) {
    empty_path_links.store(false, std::memory_order_relaxed);
    return true;
  }
  if (errno == EEXIST) return false;
  failed("linkat", name, errno);
}

}  // namespace

bool write_object_file_at(int dirfd, const std::string& name, const uint8_t* data, size_t len, unsigned mode, bool chmod) {
  // Unnamed until linked; on any failure closing it frees it.
  Fd fd(openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode));
  if (fd.get() < 0) failed("open", name, errno);
  for (size_t done = 0; done < len;) {
    ssize_t n = write(fd.get(), data + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      failed("write", name, errno);
    }
    done += static_cast<size_t>(n);
  }
  if (chmod && fchmod(fd.get(), mode) != 0) failed("fchmod", name, errno);
  return link_unnamed(fd.get(), dirfd, name);
}

bool write_object_file(const std::string& dir, const std::string& name, const uint8_t* data, size_t len, unsigned mode, bool chmod) {
  Fd dirfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirfd.get() < 0) failed("open", dir, errno);
  return write_object_file_at(dirfd.get(), name, data, len, mode, chmod);
}
