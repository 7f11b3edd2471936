// A frame-pattern watch: the worker that owns a watched direction searches
// every arriving frame for a byte pattern and posts each match to a
// single-producer ring that a control thread drains (the controller's
// "frame pattern" trigger). A direction without watches pays one branch per
// burst; the search costs only while a watch is armed.
#pragma once

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace amber::dataplane {

struct Direction;

inline constexpr unsigned kMaxWatchesPerDirection = 4;

// One match, copied by the worker: no pointer into the mbuf survives it.
struct FrameMatch {
  int64_t real_ns = 0;  // arrival, on the node's clock (CLOCK_REALTIME)
  const Direction* where = nullptr;
  uint32_t length = 0;
  uint32_t head_length = 0;  // bytes of `head` filled
  uint8_t head[96] = {};     // the frame's first bytes, for a summary
};

class FrameWatch {
 public:
  // `pattern` must not be empty. The ring holds `capacity` matches (a power
  // of two); matches beyond it are counted in missed(), never blocking.
  static Result<std::unique_ptr<FrameWatch>> create(std::string pattern, unsigned capacity = 1024);
  ~FrameWatch();
  FrameWatch(const FrameWatch&) = delete;
  FrameWatch& operator=(const FrameWatch&) = delete;

  const std::string& pattern() const { return pattern_; }
  // Worker side: searches one frame, posts a match.
  void scan(const Direction& where, const rte_mbuf* frame, int64_t real_ns);
  // Control side: takes up to `max` matches; returns how many.
  unsigned drain(FrameMatch* out, unsigned max);
  uint64_t missed() const { return missed_.load(std::memory_order_relaxed); }

 private:
  FrameWatch(std::string pattern, rte_ring* ring) : pattern_(std::move(pattern)), ring_(ring) {}
  const std::string pattern_;
  rte_ring* ring_;
  std::atomic<uint64_t> missed_{0};
};

}  // namespace amber::dataplane
