// How much longer than asked the worker's idle sleeps take, so that it
// sleeps only when even that overshoot keeps the next departure within its
// bound. A running estimate of the overshoot's 90th percentile (a frugal
// quantile estimator: up nine steps for a longer overshoot, down one for a
// shorter, so it settles where one in ten is longer).
//
// Not a maximum: on a host shared with guests a sleep now and then comes
// back milliseconds late because the worker was preempted, which spinning
// would not have escaped either. A decaying maximum took such an overshoot
// as the norm, and since it learns only from the sleeps it allows, it
// stayed there while frames flowed: the worker polled a core's worth.
#pragma once

#include <algorithm>
#include <cstdint>

namespace amber::dataplane {

class OversleepEstimate {
 public:
  static constexpr int64_t kStepNs = 500;

  int64_t ns() const { return ns_; }
  void add(int64_t over_ns) {
    ns_ = over_ns > ns_ ? ns_ + 9 * kStepNs : std::max<int64_t>(0, ns_ - kStepNs);
  }

 private:
  int64_t ns_ = 0;
};

}  // namespace amber::dataplane
