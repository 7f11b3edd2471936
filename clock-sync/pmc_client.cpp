#include "clock-sync/pmc_client.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "common/strings.h"

namespace amber::clock_sync {
namespace {

constexpr size_t kMaxMessage = 1500;

int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

Result<sockaddr_un> unix_address(const std::string& path, std::string_view role) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return invalid_argument(cat(role, " socket path '", path, "': must be 1 to ",
                                sizeof(addr.sun_path) - 1, " characters"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

constexpr std::string_view kLocalPrefix = "amb-cs-pmc.";

// Where a client binds unless told: a file, not an abstract address, so
// that a ptp4l in another network namespace can answer it.
std::string unique_local_path() {
  static std::atomic<unsigned> counter{0};
  return cat("/tmp/", kLocalPrefix, static_cast<long>(getpid()), '.', counter.fetch_add(1));
}

// The sockets of processes that ended without their destructors (killed)
// would pile up in /tmp: removed when the next client starts.
void remove_sockets_of_dead_processes() {
  DIR* dir = opendir("/tmp");
  if (dir == nullptr) return;
  while (const dirent* e = readdir(dir)) {
    const std::string_view name = e->d_name;
    if (!name.starts_with(kLocalPrefix)) continue;
    const long pid = std::strtol(name.data() + kLocalPrefix.size(), nullptr, 10);
    if (pid > 0 && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      unlinkat(dirfd(dir), e->d_name, 0);
    }
  }
  closedir(dir);
}

}  // namespace

Result<std::unique_ptr<PmcClient>> PmcClient::create(PmcClientOptions options) {
  if (options.timeout_ns <= 0) {
    return invalid_argument(
        cat("pmc client timeout: must be positive, got ", options.timeout_ns, " ns"));
  }
  auto server = unix_address(options.server_path, "ptp4l management");
  if (!server) return server.status();
  if (options.local_path.empty()) {
    remove_sockets_of_dead_processes();
    options.local_path = unique_local_path();
  }
  auto local = unix_address(options.local_path, "pmc client");
  if (!local) return local.status();

  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return internal_error(cat("socket(AF_UNIX): ", std::strerror(errno)));
  unlink(options.local_path.c_str());  // a leftover of a crashed process with our pid
  if (bind(fd, reinterpret_cast<const sockaddr*>(&local.value()), sizeof(sockaddr_un)) != 0) {
    const int err = errno;
    close(fd);
    return unavailable(cat("bind ", options.local_path, ": ", std::strerror(err)));
  }
  return std::unique_ptr<PmcClient>(new PmcClient(std::move(options), fd));
}

PmcClient::~PmcClient() {
  close(fd_);
  unlink(options_.local_path.c_str());
}

void PmcClient::drain() {
  // Replies to requests that timed out earlier would otherwise be taken for
  // answers to the next one.
  char scratch[kMaxMessage];
  while (recv(fd_, scratch, sizeof scratch, MSG_DONTWAIT) >= 0) {
  }
}

Result<std::vector<uint8_t>> PmcClient::get(ManagementId id) {
  const std::string what = management_id_name(static_cast<uint16_t>(id));
  drain();
  const uint16_t sequence_id = next_sequence_id_++;
  const auto request =
      encode_get(id, sequence_id, static_cast<uint16_t>(getpid()), options_.domain);
  auto server = unix_address(options_.server_path, "ptp4l management");
  if (!server) return server.status();
  if (sendto(fd_, request.data(), request.size(), 0,
             reinterpret_cast<const sockaddr*>(&server.value()), sizeof(sockaddr_un)) < 0) {
    const int err = errno;
    return unavailable(cat(
        "GET ", what, ": cannot send to ptp4l at ", options_.server_path, ": ", std::strerror(err),
        err == ENOENT || err == ECONNREFUSED ? " (is ptp4l running with this --uds_address?)"
                                             : ""));
  }
  const int64_t deadline = monotonic_ns() + options_.timeout_ns;
  buffer_.resize(kMaxMessage);
  for (;;) {
    const int64_t left = deadline - monotonic_ns();
    if (left <= 0) {
      return deadline_exceeded(cat("GET ", what, ": no reply from ptp4l at ", options_.server_path,
                                   " within ", options_.timeout_ns / 1'000'000, " ms"));
    }
    pollfd pfd{fd_, POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>((left + 999'999) / 1'000'000));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return internal_error(cat("GET ", what, ": poll: ", std::strerror(errno)));
    }
    if (ready == 0) continue;
    const ssize_t got = recv(fd_, buffer_.data(), buffer_.size(), MSG_DONTWAIT);
    if (got < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return unavailable(
          cat("GET ", what, ": receive from ", options_.server_path, ": ", std::strerror(errno)));
    }
    auto response = parse_response(std::span<const uint8_t>(buffer_.data(), size_t(got)),
                                   Expected{id, sequence_id});
    if (!response) return response.status().with_context(cat(options_.server_path, ": "));
    return std::vector<uint8_t>(response->data.begin(), response->data.end());
  }
}

Result<CurrentDataSet> PmcClient::current_data_set() {
  auto data = get(ManagementId::kCurrentDataSet);
  if (!data) return data.status();
  return decode_current_data_set(*data);
}

Result<ParentDataSet> PmcClient::parent_data_set() {
  auto data = get(ManagementId::kParentDataSet);
  if (!data) return data.status();
  return decode_parent_data_set(*data);
}

Result<PortDataSet> PmcClient::port_data_set() {
  auto data = get(ManagementId::kPortDataSet);
  if (!data) return data.status();
  return decode_port_data_set(*data);
}

Result<TimeStatus> PmcClient::time_status() {
  auto data = get(ManagementId::kTimeStatusNp);
  if (!data) return data.status();
  return decode_time_status(*data);
}

Result<PtpSnapshot> PmcClient::snapshot() {
  PtpSnapshot snap;
  auto ts = time_status();
  if (!ts) return ts.status();
  snap.time_status = *ts;
  auto current = current_data_set();
  if (!current) return current.status();
  snap.current = *current;
  auto parent = parent_data_set();
  if (!parent) return parent.status();
  snap.parent = *parent;
  auto port = port_data_set();
  if (!port) return port.status();
  snap.port = *port;
  return snap;
}

}  // namespace amber::clock_sync
