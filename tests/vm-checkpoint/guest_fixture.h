// Shared pieces of the vm-checkpoint tests: the guest image (built on demand
// by scripts/build-guest.sh), temp directories removed on every exit path,
// and the guest's serial console (a log file to read, a socket to type into).
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "vm-checkpoint/vm.h"

namespace amber::vm::testing {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/amb-vm-XXXXXX";
    if (::mkdtemp(name) != nullptr) path_ = name;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct GuestImage {
  std::string kernel, initrd, base_disk;
};

// Builds the guest once (cached under <build>/guest/); empty on failure.
inline std::optional<GuestImage> guest_image(std::string* why) {
  const std::string build = AMBER_BUILD_DIR;
  const std::string script = std::string(AMBER_SOURCE_DIR) + "/scripts/build-guest.sh";
  const std::string cmd = script + " " + build + " >/dev/null 2>" + build + "/guest-build.log";
  if (std::system(cmd.c_str()) != 0) {
    *why = "scripts/build-guest.sh failed; see " + build + "/guest-build.log";
    return std::nullopt;
  }
  return GuestImage{build + "/guest/vmlinuz", build + "/guest/initramfs.cpio.gz",
                    build + "/guest/base.qcow2"};
}

inline bool have_binary(const char* name) {
  std::string cmd = std::string("command -v ") + name + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

struct CounterLine {
  double uptime = 0;
  long epoch = 0;
  long n = 0;
};

// The guest's console: everything it printed is in serial.log.
class Console {
 public:
  explicit Console(std::string log_path) : log_(std::move(log_path)) {}

  std::string text() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // Counter lines "T <uptime> <epoch> <n>" the guest printed, in order.
  std::vector<CounterLine> counter() const {
    static const std::regex re(R"(^T (\d+\.\d\d) (\d+) (\d+)\r?$)");
    std::vector<CounterLine> out;
    std::istringstream in(text());
    std::string line;
    std::smatch m;
    while (std::getline(in, line)) {
      if (std::regex_match(line, m, re)) {
        out.push_back({std::stod(m[1]), std::stol(m[2]), std::stol(m[3])});
      }
    }
    return out;
  }

  bool wait_for(const std::string& needle, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (text().find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  bool wait_counter_beyond(long n, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto c = counter();
      if (!c.empty() && c.back().n > n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

 private:
  std::string log_;
};

// Types `command` on the guest shell and waits for `marker` in the console.
// The marker should be computed by the shell (e.g. $((40+2))) so that the
// echo of the typed command does not match it.
inline bool run_in_guest(const VmConfig& config, const std::string& command,
                         const std::string& marker, std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = config.serial_socket();
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof addr.sun_path - 1));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  std::string line = command + "\n";
  // The UART takes input a character at a time; small writes avoid overruns.
  for (std::size_t i = 0; ok && i < line.size(); i += 8) {
    std::string chunk = line.substr(i, 8);
    ok = ::write(fd, chunk.data(), chunk.size()) == static_cast<ssize_t>(chunk.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Keep reading the socket: output that QEMU cannot write to a connected
  // client stalls the guest's console (and the command) until it is read.
  const Console console(config.serial_log());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool found = false;
  char sink[4096];
  while (ok && !found && std::chrono::steady_clock::now() < deadline) {
    while (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    found = console.text().find(marker) != std::string::npos;
    if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ok = ok && found;
  ::close(fd);
  return ok;
}

// True if a process whose command line mentions `needle` is still alive.
inline bool process_mentioning(const std::string& needle) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) != std::string::npos && name != std::to_string(::getpid())) {
      // Zombies still carry a cmdline only while not reaped; check the state.
      std::ifstream stat(entry.path() / "stat");
      std::string pid, comm, state;
      stat >> pid >> comm >> state;
      if (state != "Z") return true;
    }
  }
  return false;
}

}  // namespace amber::vm::testing
