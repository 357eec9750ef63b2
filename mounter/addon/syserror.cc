#include "syserror.h"

#include <cstring>

std::string SysError::code() const {
  // strerrorname_np: glibc 2.32+.
  const char* name = strerrorname_np(err);
  return name ? name : "E" + std::to_string(err);
}

std::string kernel_line_text(const std::string& line) {
  if (line.size() < 2 || line[1] != ' ') return line;
  switch (line[0]) {
    case 'e': return line.substr(2);
    case 'w': return "warning: " + line.substr(2);
    case 'i': return "note: " + line.substr(2);
    default: return line;
  }
}

std::string SysError::message() const {
  std::string m = op + ": " + (hint.empty() ? std::strerror(err) : hint) + " (" + code() + ")";
  // The kernel's own words say which option was wrong and why; errno alone rarely does.
  for (size_t i = 0; i < kernel.size(); i++) m += (i == 0 ? ": " : "; ") + kernel_line_text(kernel[i]);
  return m;
}
