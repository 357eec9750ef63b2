// Creating a store object (compiler/store-worker.ts) the cheapest crash-safe way: an unnamed
// file (O_TMPFILE) in its fan-out directory, written, then given its name with linkat(). A
// killed writer leaves no name at all (the kernel frees the unnamed inode), never a short file
// under an object's name, and the kernel does less than for a temp name renamed into place
// (bench/build/create-files.c: 31-34 against 40-43 us of CPU per file on ext4).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

// Creates DIR/NAME holding data[0, len) with permission bits `mode` (fchmod'ed when `chmod`,
// since the umask applies to O_TMPFILE too). Returns true if it was created, false if DIR/NAME
// existed already (left as it was). Throws SysError: from "open" with EOPNOTSUPP (or EISDIR
// from kernels before O_TMPFILE) where the filesystem cannot make unnamed files.
bool write_object_file(const std::string& dir, const std::string& name, const uint8_t* data, size_t len, unsigned mode, bool chmod);

// The same in the directory open as `dirfd` (O_RDONLY | O_DIRECTORY): a writer that keeps its
// fan-out directories open walks no path per object.
bool write_object_file_at(int dirfd, const std::string& name, const uint8_t* data, size_t len, unsigned mode, bool chmod);
