#include "rpc/files.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "common/strings.h"

namespace amber::controller {
namespace fs = std::filesystem;

uint64_t tree_bytes(const std::string& path) {
  std::error_code ec;
  uint64_t total = 0;
  if (fs::is_regular_file(path, ec)) return fs::file_size(path, ec);
  for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const uint64_t size = it->file_size(size_ec);
      if (!size_ec) total += size;
    }
  }
  return total;
}

Status write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  // Manifests, store state, leases: the owner's only (#16 defect 6).
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return unavailable(cat(tmp, ": cannot create: ", std::strerror(errno)));
  (void)::fchmod(fd, 0600);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return resource_exhausted(cat(tmp, ": write failed: ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return resource_exhausted(cat(tmp, ": fsync failed: ", std::strerror(err)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return unavailable(cat(path, ": rename failed: ", std::strerror(err)));
  }
  // The rename is durable only once its folder is (#16 defect 9: this
  // result was ignored).
  return fsync_directory(fs::path(path).parent_path().string());
}

Status fsync_directory(const std::string& path) {
  const int dir = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return unavailable(cat(path, ": cannot open the folder: ", std::strerror(errno)));
  const int rc = ::fsync(dir);
  const int err = errno;
  ::close(dir);
  if (rc != 0) return unavailable(cat(path, ": fsync of the folder failed: ", std::strerror(err)));
  return Status::ok();
}

Result<std::string> sha256_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return not_found(cat(path, ": cannot open: ", std::strerror(errno)));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    ::close(fd);
    return unavailable(cat(path, ": cannot start a SHA-256 digest (OpenSSL)"));
  }
  std::vector<char> buffer(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return data_loss(cat(path, ": read failed: ", std::strerror(err)));
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest;
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest.data(), &length);
  std::string hex;
  static const char* kDigits = "0123456789abcdef";
  for (unsigned char b : std::span(digest.data(), length)) {
    hex.push_back(kDigits[b >> 4]);
    hex.push_back(kDigits[b & 15]);
  }
  return hex;
}

Result<uint64_t> free_bytes(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) {
    return not_found(cat(path, ": ", std::strerror(errno)));
  }
  return uint64_t(st.f_bavail) * st.f_frsize;
}

}  // namespace amber::controller
