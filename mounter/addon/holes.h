// The data runs of a sparse file (lseek SEEK_DATA / SEEK_HOLE, which Node's fs cannot reach), so
// that hashing and copying an object skip its holes instead of reading terabytes of zeros.
#pragma once

#include <cstdint>

struct DataExtent {
  bool found;     // false: no data at or after the offset (only a hole up to the end)
  int64_t start;  // first byte of data at or after the offset
  int64_t end;    // the hole after it (the file's size when it runs to the end)
};

// The next run of data of open file `fd` at or after `offset`. Throws SysError.
DataExtent next_data_extent(int fd, int64_t offset);
