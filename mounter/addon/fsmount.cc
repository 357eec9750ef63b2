#include "fsmount.h"

#include <cerrno>
#include <fcntl.h>
#include <linux/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fd.h"
#include "syserror.h"

namespace {

// glibc 2.36 has wrappers for some of these only in <sys/mount.h>, which clashes with
// <linux/mount.h> (both define the fsconfig commands); syscall(2) needs neither.
int sys_fsopen(const char* fstype, unsigned flags) {
  return static_cast<int>(syscall(SYS_fsopen, fstype, flags));
}

int sys_fsconfig(int fd, unsigned cmd, const char* key, const char* value) {
  return static_cast<int>(syscall(SYS_fsconfig, fd, cmd, key, value, 0));
}

int sys_fsmount(int fd, unsigned flags, unsigned attr_flags) {
  return static_cast<int>(syscall(SYS_fsmount, fd, flags, attr_flags));
}

int sys_open_tree(const char* path, unsigned flags) {
  return static_cast<int>(syscall(SYS_open_tree, AT_FDCWD, path, flags));
}

int sys_mount_setattr(int fd, struct mount_attr* attr) {
  return static_cast<int>(syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, attr, sizeof *attr));
}

int sys_move_mount(int from_fd, const char* to_path) {
  return static_cast<int>(syscall(SYS_move_mount, from_fd, "", AT_FDCWD, to_path, MOVE_MOUNT_F_EMPTY_PATH));
}

// The fs context queues what the filesystem logged (errorfc/warnfc/infofc, at most 8): one
// message per read(), "e "/"w "/"i " first, ENODATA when empty.
std::vector<std::string> drain_messages(int fs_fd) {
  std::vector<std::string> lines;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fs_fd, buf, sizeof buf);
    if (n <= 0) break;
    std::string line(buf, static_cast<size_t>(n));
    while (!line.empty() && line.back() == '\n') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

[[noreturn]] void fail(int fs_fd, std::string syscall_name, std::string op, int err) {
  SysError e{std::move(syscall_name), std::move(op), err, "", "", {}};
  if (fs_fd >= 0) e.kernel = drain_messages(fs_fd);
  throw e;
}

int open_context(const std::string& fstype) {
  int fd = sys_fsopen(fstype.c_str(), FSOPEN_CLOEXEC);
  if (fd >= 0) return fd;
  int err = errno;
  SysError e{"fsopen", "fsopen " + fstype, err, "", "", {}};
  // ENODEV's "No such device" would send the user looking for a device.
  if (err == ENODEV) e.hint = "unknown filesystem type, no kernel module provides it";
  throw e;
}

void set_option(int fs_fd, const std::string& key, const std::optional<std::string>& value) {
  int r = value ? sys_fsconfig(fs_fd, FSCONFIG_SET_STRING, key.c_str(), value->c_str())
                : sys_fsconfig(fs_fd, FSCONFIG_SET_FLAG, key.c_str(), nullptr);
  if (r < 0) {
    int err = errno;
    fail(fs_fd, "fsconfig", "fsconfig " + key + (value ? "=" + *value : ""), err);
  }
}

void configure(int fs_fd, const FsMountSpec& spec) {
  if (spec.source) set_option(fs_fd, "source", spec.source);
  for (const auto& [key, value] : spec.options) set_option(fs_fd, key, value);
  if (sys_fsconfig(fs_fd, FSCONFIG_CMD_CREATE, nullptr, nullptr) < 0) {
    int err = errno;
    fail(fs_fd, "fsconfig", "fsconfig FSCONFIG_CMD_CREATE (" + spec.fstype + ")", err);
  }
}

}  // namespace

FsMountResult fs_mount(const FsMountSpec& spec) {
  Fd fs(open_context(spec.fstype));
  configure(fs.get(), spec);
  Fd mnt(sys_fsmount(fs.get(), FSMOUNT_CLOEXEC, spec.attr_flags));
  if (mnt.get() < 0) {
    int err = errno;
    fail(fs.get(), "fsmount", "fsmount (" + spec.fstype + ")", err);
  }
  FsMountResult result;
  result.messages = drain_messages(fs.get());
  if (!spec.target) {
    result.fd = mnt.release();
    return result;
  }
  // On failure the unattached mount goes away when mnt is closed: nothing to undo.
  move_mount_to(mnt.get(), *spec.target);
  return result;
}

void move_mount_to(int mount_fd, const std::string& target) {
  if (sys_move_mount(mount_fd, target.c_str()) < 0) {
    int err = errno;
    throw SysError{"move_mount", "move_mount to " + target, err, target, "", {}};
  }
}

void idmap_bind(const std::string& source, const std::string& target, int userns_fd) {
  Fd tree(sys_open_tree(source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
  if (tree.get() < 0) {
    int err = errno;
    throw SysError{"open_tree", "open_tree " + source, err, source, "", {}};
  }
  struct mount_attr attr = {};
  attr.attr_set = MOUNT_ATTR_IDMAP;
  attr.userns_fd = static_cast<__u64>(userns_fd);
  if (sys_mount_setattr(tree.get(), &attr) < 0) {
    int err = errno;
    SysError e{"mount_setattr", "mount_setattr MOUNT_ATTR_IDMAP on " + source, err, source, "", {}};
    if (err == EINVAL) e.hint = "the filesystem does not allow idmapped mounts, or the fd is no user namespace with a mapping";
    throw e;
  }
  // On failure the detached clone goes away when tree is closed: nothing to undo.
  move_mount_to(tree.get(), target);
}
