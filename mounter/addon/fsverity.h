// fs-verity on one file (Documentation/filesystems/fsverity.rst): enable it with the parameters
// unionblob names objects by (SHA-256, 4096-byte Merkle blocks, no salt), and measure it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

// true: enabled now; false: the file already had fs-verity. Throws SysError otherwise, with
// ENOTTY (the filesystem has no fs-verity) or EOPNOTSUPP (not enabled on this one, e.g. ext4
// without -O verity, or a kernel without CONFIG_FS_VERITY) when there is simply none here.
bool fsverity_enable(const std::string& path);

// The file's fs-verity digest (32 bytes for SHA-256), or none when the file has no fs-verity or
// its filesystem has none at all.
std::optional<std::vector<uint8_t>> fsverity_measure(const std::string& path);
