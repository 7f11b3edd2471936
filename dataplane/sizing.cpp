#include "dataplane/sizing.h"

#include <algorithm>
#include <cstdio>

#include "common/units.h"
#include "link-emulator/schedule.h"

namespace amber::dataplane {
namespace {

// The parameters a pipe can carry frames at: each segment's, a trace
// counted at its busiest millisecond, and the static ones unless a
// schedule replaces them for good. A schedule that starts now or on the
// link's first frame and loops or holds its last segment never lets a
// frame meet the static parameters; one that starts on an event does
// before it, and one that ends does after.
std::vector<link::PipeConfig> every_config(const link::PipeConfig& pipe) {
  link::PipeConfig plain = pipe;
  plain.schedule = link::ScheduleRef();
  if (!pipe.schedule) return {plain};
  const link::Schedule& schedule = *pipe.schedule;
  std::vector<link::PipeConfig> out;
  for (const link::Segment& seg : schedule.segments) out.push_back(seg.applied_to(plain));
  if (schedule.trace) {
    uint64_t busiest = 0;
    for (size_t i = 0, j = 0; i < schedule.trace->ms.size(); i = j) {
      while (j < schedule.trace->ms.size() && schedule.trace->ms[j] == schedule.trace->ms[i]) ++j;
      busiest = std::max<uint64_t>(busiest, j - i);
    }
    const uint64_t peak_bps = busiest * schedule.trace->opportunity_bytes * 8 * 1000;
    if (schedule.segments.empty()) out.push_back(plain);  // the trace over the static rest
    for (link::PipeConfig& c : out) c.rate_bps = peak_bps;
  }
  if (schedule.start == link::ScheduleStart::kOnEvent ||
      schedule.at_end == link::ScheduleEnd::kEnd) {
    out.push_back(plain);
  }
  return out;
}

uint64_t queue_frames(const link::PipeConfig& pipe) {
  uint64_t queue = pipe.queue_limit_frames.value_or(0);
  if (pipe.queue_limit_bytes) {
    uint64_t by_bytes = *pipe.queue_limit_bytes / 64 + 1;  // smallest frames
    queue = queue ? std::min(queue, by_bytes) : by_bytes;
  }
  return queue;
}

}  // namespace

uint64_t frames_on_wire(const link::PipeConfig& pipe, uint64_t unlimited_rate_bps,
                        uint32_t frame_bytes) {
  const uint64_t rate = pipe.rate_bps ? pipe.rate_bps : unlimited_rate_bps;
  const unsigned __int128 ns = static_cast<uint64_t>(pipe.delay_ns + pipe.jitter_ns);
  const unsigned __int128 bits_per_frame = uint64_t{frame_bytes + pipe.overhead_bytes} * 8;
  const unsigned __int128 denominator = bits_per_frame * 1'000'000'000ULL;
  return static_cast<uint64_t>((ns * rate + denominator - 1) / denominator);
}

uint32_t wire_frames(const link::PipeConfig& pipe, uint64_t unlimited_rate_bps) {
  constexpr uint64_t kMin = 4096, kMax = uint64_t{1} << 20;
  return static_cast<uint32_t>(
      std::clamp(frames_on_wire(pipe, unlimited_rate_bps, 64), kMin, kMax));
}

PoolSizing size_pool(const config::NodeConfig& config, const RingSizes& rings,
                     uint32_t mbuf_overhead_bytes) {
  PoolSizing s;
  for (const config::LinkConfig& link : config.links) {
    for (const link::PipeConfig* pipe : {&link.a_to_b, &link.b_to_a}) {
      uint64_t wire = 0, queue = 0;
      for (const link::PipeConfig& c : every_config(*pipe)) {
        wire = std::max(
            wire, frames_on_wire(c, config.sizing_unlimited_rate_bps, config.sizing_frame_bytes));
        if (c.rate_bps) queue = std::max(queue, queue_frames(c));
      }
      s.frames_on_wire += wire;
      s.frames_in_queues += queue;
    }
    // Both ports of a link: their rings full, a burst being received and a
    // burst waiting to be sent in each direction.
    s.frames_in_rings += 2ULL * (rings.rx_descriptors + rings.tx_descriptors + 4ULL * rings.burst);
  }
  s.mbufs = s.frames_on_wire + s.frames_in_queues + s.frames_in_rings +
            uint64_t{rings.lcores} * rings.cache_per_lcore * 3 / 2;
  s.bytes_per_mbuf = mbuf_overhead_bytes;
  return s;
}

std::string PoolSizing::describe() const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%llu mbufs (%llu on the wire + %llu in bottleneck queues + %llu in port rings "
                "and bursts, plus per-lcore caches) x %llu B = %s",
                static_cast<unsigned long long>(mbufs),
                static_cast<unsigned long long>(frames_on_wire),
                static_cast<unsigned long long>(frames_in_queues),
                static_cast<unsigned long long>(frames_in_rings),
                static_cast<unsigned long long>(bytes_per_mbuf), format_bytes(bytes()).c_str());
  return buf;
}

}  // namespace amber::dataplane
