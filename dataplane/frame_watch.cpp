#include "dataplane/frame_watch.h"

#include <rte_errno.h>
#include <rte_lcore.h>

#include <algorithm>
#include <cstring>

#include "common/strings.h"

namespace amber::dataplane {

Result<std::unique_ptr<FrameWatch>> FrameWatch::create(std::string pattern, unsigned capacity) {
  if (pattern.empty()) return invalid_argument("frame watch: the pattern is empty");
  static std::atomic<unsigned> serial{0};
  const std::string name = cat("amb_watch", serial.fetch_add(1));
  static_assert(sizeof(FrameMatch) % 4 == 0, "rte_ring elements are multiples of 4 bytes");
  rte_ring* ring = rte_ring_create_elem(name.c_str(), sizeof(FrameMatch), capacity,
                                        static_cast<int>(rte_socket_id()),
                                        RING_F_SP_ENQ | RING_F_SC_DEQ | RING_F_EXACT_SZ);
  if (ring == nullptr) {
    return resource_exhausted(
        cat("frame watch: cannot create its match ring: ", rte_strerror(rte_errno)));
  }
  return std::unique_ptr<FrameWatch>(new FrameWatch(std::move(pattern), ring));
}

FrameWatch::~FrameWatch() {
  rte_ring_free(ring_);
}

void FrameWatch::scan(const Direction& where, const rte_mbuf* frame, int64_t real_ns) {
  const auto* bytes = rte_pktmbuf_mtod(frame, const uint8_t*);
  const uint32_t length = rte_pktmbuf_data_len(frame);
  if (::memmem(bytes, length, pattern_.data(), pattern_.size()) == nullptr) return;
  FrameMatch match;
  match.real_ns = real_ns;
  match.where = &where;
  match.length = length;
  match.head_length = std::min<uint32_t>(length, sizeof match.head);
  std::memcpy(match.head, bytes, match.head_length);
  if (rte_ring_enqueue_elem(ring_, &match, sizeof match) != 0) {
    missed_.fetch_add(1, std::memory_order_relaxed);
  }
}

unsigned FrameWatch::drain(FrameMatch* out, unsigned max) {
  return rte_ring_dequeue_burst_elem(ring_, out, sizeof(FrameMatch), max, nullptr);
}

}  // namespace amber::dataplane
