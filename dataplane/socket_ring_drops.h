// Frames the kernel dropped because a net_af_packet port's socket ring was
// full. The PMD reports no rx_missed (its rte_eth_stats leave it 0), so
// without this a delay node on af_packet ports loses frames silently when
// its loop falls behind. The kernel counts them per socket
// (PACKET_STATISTICS, reset on each read); this finds the PMD's sockets
// among the process's descriptors, by the interface each is bound to, and
// keeps the running totals per port.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace amber::dataplane {

class SocketRingDrops {
 public:
  // Finds the AF_PACKET sockets (TPACKET_V2, as the PMD opens them) bound
  // to the kernel interface of each net_af_packet port among `ports`.
  // Ports of other drivers are left out. Call once the ports are started.
  void attach(const std::vector<uint16_t>& ports);
  // Frames the kernel dropped at each port's socket rings so far, read
  // from every socket once (ports without one are absent).
  std::map<uint16_t, uint64_t> dropped();
  // How many sockets attach() found, for the log and tests.
  size_t sockets() const;
  // The descriptors of `port`'s sockets (none for other drivers).
  std::vector<int> fds(uint16_t port) const;
  // Forgets the sockets: call before the ports stop, which closes them
  // (their descriptors may then be reused). The totals stay.
  void detach();

 private:
  struct Socket {
    int fd;
    uint16_t port;
  };
  mutable std::mutex mutex_;
  std::vector<Socket> sockets_;
  std::map<uint16_t, uint64_t> dropped_;
};

}  // namespace amber::dataplane
