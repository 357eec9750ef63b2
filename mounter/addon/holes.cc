// See holes.h.
#include "holes.h"

#include <cerrno>
#include <string>
#include <unistd.h>

#include "syserror.h"

DataExtent next_data_extent(int fd, int64_t offset) {
  off_t start = lseek(fd, offset, SEEK_DATA);
  if (start < 0) {
    if (errno == ENXIO) return {false, 0, 0};  // nothing but a hole from offset to the end
    throw SysError{"lseek", "lseek SEEK_DATA fd " + std::to_string(fd), errno, "", "", {}};
  }
  off_t end = lseek(fd, start, SEEK_HOLE);
  if (end < 0) throw SysError{"lseek", "lseek SEEK_HOLE fd " + std::to_string(fd), errno, "", "", {}};
  return {true, static_cast<int64_t>(start), static_cast<int64_t>(end)};
}
