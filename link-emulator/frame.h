// A frame as the link model sees it: a handle with a length and the virtual
// timestamps the pipe assigns. The hook lets a pipe hold the frame in an
// intrusive list, so holding costs no allocation: the dataplane places a
// Frame in each DPDK mbuf's private area, tests place them in arrays.
#pragma once

#include <boost/intrusive/slist.hpp>
#include <cstdint>

namespace amber::link {

using FrameHook =
    boost::intrusive::slist_member_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>>;

// Which of the pipe's three FIFOs holds a frame. Stored in checkpoints.
enum class FrameStage : uint8_t {
  kBottleneck = 0,  // waiting for, or in, serialization at the link rate
  kDelayLine = 1,   // serialized, "on the wire" for the propagation delay
  kExpress = 2,     // serialized, skipping the delay line (explicit reordering)
};

struct Frame {
  FrameHook hook;
  uint32_t length = 0;  // bytes, as the shaper counts them (without overhead)
  FrameStage stage = FrameStage::kBottleneck;
  bool express = false;        // decided at arrival: skips the delay line
  int64_t arrival_ns = 0;      // virtual time the pipe accepted the frame
  int64_t extra_delay_ns = 0;  // jitter drawn at arrival (may be negative)
  int64_t ready_ns = 0;        // virtual end of serialization; valid from head of bottleneck on
  int64_t departure_ns = 0;    // virtual departure; valid once out of the bottleneck
};

using FrameList =
    boost::intrusive::slist<Frame, boost::intrusive::member_hook<Frame, FrameHook, &Frame::hook>,
                            boost::intrusive::cache_last<true>,
                            boost::intrusive::constant_time_size<false>>;

}  // namespace amber::link
