// How many mbufs a delay node needs: every direction's bandwidth-delay
// product in frames of the sizing size, its bottleneck queue, and what the
// ports' rings and bursts hold. Pure arithmetic, tested without DPDK.
#pragma once

#include <cstdint>
#include <string>

#include "config/node_config.h"

namespace amber::dataplane {

struct PoolSizing {
  uint64_t frames_on_wire = 0;    // sum of rate x (delay + jitter) over directions
  uint64_t frames_in_queues = 0;  // sum of bottleneck queue limits
  uint64_t frames_in_rings = 0;   // rx/tx descriptors and bursts in flight
  uint64_t mbufs = 0;             // total to allocate
  uint64_t bytes_per_mbuf = 0;    // approximate footprint of one mbuf
  uint64_t bytes() const { return mbufs * bytes_per_mbuf; }
  std::string describe() const;
};

struct RingSizes {
  uint32_t rx_descriptors = 1024;
  uint32_t tx_descriptors = 1024;
  uint32_t burst = 32;
  uint32_t lcores = 1;
  uint32_t cache_per_lcore = 256;
};

// Frames one direction holds on the wire at most: rate x (delay + jitter).
uint64_t frames_on_wire(const link::PipeConfig& pipe, uint64_t unlimited_rate_bps,
                        uint32_t frame_bytes);

// Room to reserve on one direction's dense wire (link::Pipe::reserve):
// rate x (delay + jitter) in minimum-size (64-byte) frames, whatever the
// sizing frame size, since a frame's slot costs 8 bytes, not an mbuf;
// bounded to [4096, 2^20]. Beyond it frames wait in a list: correct, slower.
uint32_t wire_frames(const link::PipeConfig& pipe, uint64_t unlimited_rate_bps);

PoolSizing size_pool(const config::NodeConfig& config, const RingSizes& rings,
                     uint32_t mbuf_overhead_bytes);

}  // namespace amber::dataplane
