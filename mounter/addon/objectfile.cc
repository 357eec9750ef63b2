#include "objectfile.h"

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

}  // namespace

bool write_object_file(const std::string& dir, const std::string& name, const uint8_t* data, size_t len, unsigned mode, bool chmod) {
  // Unnamed until linkat() succeeds; on any failure closing it frees it.
  Fd fd(open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, mode));
  if (fd.get() < 0) failed("open", dir, errno);
  for (size_t done = 0; done < len;) {
    ssize_t n = write(fd.get(), data + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      failed("write", dir, errno);
    }
    done += static_cast<size_t>(n);
  }
  if (chmod && fchmod(fd.get(), mode) != 0) failed("fchmod", dir, errno);
  std::string target = dir + "/" + name;
  // linkat of /proc/self/fd/N with AT_SYMLINK_FOLLOW needs no capability (AT_EMPTY_PATH would).
  std::string self = "/proc/self/fd/" + std::to_string(fd.get());
  if (linkat(AT_FDCWD, self.c_str(), AT_FDCWD, target.c_str(), AT_SYMLINK_FOLLOW) == 0) return true;
  if (errno == EEXIST) return false;
  failed("linkat", target, errno);
}
