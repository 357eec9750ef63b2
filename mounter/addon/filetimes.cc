// See filetimes.h.
#include "filetimes.h"

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>

#include "syserror.h"

void set_times_nofollow(const std::string& path, int64_t sec, long nsec) {
  struct timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = sec;
  ts[0].tv_nsec = ts[1].tv_nsec = nsec;
  if (utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) < 0) throw SysError{"utimensat", "utimensat " + path, errno, path, "", {}};
}
