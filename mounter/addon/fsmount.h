// Mounting through the new mount API (Linux 5.2+): fsopen -> fsconfig... -> FSCONFIG_CMD_CREATE
// -> fsmount -> move_mount. Unlike mount(2), every step reports which option failed, and the
// filesystem's own explanation can be read back from the context fd.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

struct FsMountSpec {
  std::string fstype;
  std::optional<std::string> source;
  // (key, value): no value is FSCONFIG_SET_FLAG ("ro"), a value FSCONFIG_SET_STRING.
  std::vector<std::pair<std::string, std::optional<std::string>>> options;
  unsigned attr_flags = 0;             // MOUNT_ATTR_* for the new mount
  std::optional<std::string> target;   // none: return the detached mount's fd
};

struct FsMountResult {
  int fd = -1;                        // the detached mount (no target), else -1
  std::vector<std::string> messages;  // what the kernel logged on success (warnings, notes)
};

// Throws SysError, with the kernel's messages attached.
FsMountResult fs_mount(const FsMountSpec& spec);

// Attaches a detached mount (fs_mount without target, or open_tree) at target.
void move_mount_to(int mount_fd, const std::string& target);

// An idmapped bind of the mount at source, attached at target: open_tree(OPEN_TREE_CLONE),
// mount_setattr(MOUNT_ATTR_IDMAP) with the user namespace userns_fd holds the mapping of
// (Linux 5.12+, where the filesystem allows it: FS_ALLOW_IDMAP), move_mount. Throws SysError.
void idmap_bind(const std::string& source, const std::string& target, int userns_fd);
