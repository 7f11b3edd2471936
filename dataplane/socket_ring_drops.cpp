#include "dataplane/socket_ring_drops.h"

#include <dirent.h>
#include <linux/if_packet.h>
#include <rte_ethdev.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <string_view>

namespace amber::dataplane {
namespace {

// The interface index an AF_PACKET socket of the PMD's kind is bound to,
// or 0 if `fd` is not one.
int packet_socket_ifindex(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  int domain = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_PACKET) return 0;
  int version = 0;
  len = sizeof version;
  if (getsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, &len) != 0 || version != TPACKET_V2)
    return 0;
  sockaddr_ll addr{};
  len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  return addr.sll_ifindex;
}

}  // namespace

void SocketRingDrops::attach(const std::vector<uint16_t>& ports) {
  std::map<int, uint16_t> by_ifindex;
  for (uint16_t port : ports) {
    rte_eth_dev_info info{};
    if (rte_eth_dev_info_get(port, &info) != 0 || info.driver_name == nullptr) continue;
    if (std::string_view(info.driver_name) != "net_af_packet" || info.if_index == 0) continue;
    by_ifindex[static_cast<int>(info.if_index)] = port;
  }
  if (by_ifindex.empty()) return;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return;
  std::lock_guard lock(mutex_);
  while (const dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    auto it = by_ifindex.find(packet_socket_ifindex(static_cast<int>(fd)));
    if (it == by_ifindex.end()) continue;
    sockets_.push_back(Socket{static_cast<int>(fd), it->second});
    // What the kernel counted before the node ran (the port's own start)
    // is not the node's: read and so reset it.
    tpacket_stats stats{};
    socklen_t len = sizeof stats;
    getsockopt(static_cast<int>(fd), SOL_PACKET, PACKET_STATISTICS, &stats, &len);
  }
  closedir(dir);
}

std::map<uint16_t, uint64_t> SocketRingDrops::dropped() {
  std::lock_guard lock(mutex_);
  for (const Socket& s : sockets_) {
    tpacket_stats stats{};
    socklen_t len = sizeof stats;
    if (getsockopt(s.fd, SOL_PACKET, PACKET_STATISTICS, &stats, &len) == 0) {
      dropped_[s.port] += stats.tp_drops;
    }
  }
  return dropped_;
}

void SocketRingDrops::detach() {
  std::lock_guard lock(mutex_);
  sockets_.clear();
}

std::vector<int> SocketRingDrops::fds(uint16_t port) const {
  std::lock_guard lock(mutex_);
  std::vector<int> out;
  for (const Socket& s : sockets_) {
    if (s.port == port) out.push_back(s.fd);
  }
  return out;
}

size_t SocketRingDrops::sockets() const {
  std::lock_guard lock(mutex_);
  return sockets_.size();
}

}  // namespace amber::dataplane
