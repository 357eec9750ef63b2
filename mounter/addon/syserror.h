// A failed system call, as the syscall layer (fsmount.cc, fsverity.cc) reports it; addon.cc
// turns it into a JavaScript Error. Kept free of Node-API so the kernel-facing code reads as
// plain C++.
#pragma once

#include <string>
#include <vector>

struct SysError {
  std::string syscall;  // "fsconfig", "ioctl", ... (Error.syscall)
  std::string op;       // what was attempted, for the message: "fsconfig size=1x"
  int err;              // errno
  std::string path;     // the file concerned, if any (Error.path)
  std::string hint;     // replaces strerror() where it would mislead (fsopen's ENODEV)
  std::vector<std::string> kernel;  // lines read from the fs context: "e tmpfs: Bad value ..."

  // "fsconfig size=1x: Invalid argument (EINVAL): tmpfs: Bad value for 'size'"
  std::string message() const;
  // "EINVAL"; "E<n>" for a number glibc has no name for.
  std::string code() const;
};

// Kernel message lines without their "e " prefix; warnings and notes keep a word for it.
std::string kernel_line_text(const std::string& line);
