// Setting a file's times to the nanosecond (compiler/extract.ts): Node's utimes and lutimes take
// seconds as a double that libuv cuts to microseconds, so an image's nanoseconds would be lost.
#pragma once

#include <cstdint>
#include <string>

// atime and mtime of `path` (a symlink itself, never its target) to sec.nsec. Throws SysError.
void set_times_nofollow(const std::string& path, int64_t sec, long nsec);
