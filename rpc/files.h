// Files the control plane writes and checks: atomic replacement, SHA-256
// digests, sizes of folders. Shared by the agents and the controller.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace amber::controller {

// Writes `text` to `path` atomically: temporary file, fsync, rename, fsync
// of the folder.
Status write_file_atomically(const std::string& path, const std::string& text);
// fsync of a folder (a rename or removal in it made durable), its result checked.
Status fsync_directory(const std::string& path);
// SHA-256 of a file, hex.
Result<std::string> sha256_file(const std::string& path);
// Size in bytes of every regular file under `path` (0 if absent).
uint64_t tree_bytes(const std::string& path);
// Free bytes for an unprivileged writer of the filesystem holding `path`.
Result<uint64_t> free_bytes(const std::string& path);

}  // namespace amber::controller
