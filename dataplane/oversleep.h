// How much longer than asked the worker's idle sleeps take, so that it
// sleeps only when even that overshoot keeps the next departure within its
// bound. Two rules:
//
// - kDecayingMaximum (a polling worker, --idle-wait timer, the default):
//   max(overshoot, previous - previous / 64). It learns only from the
//   sleeps it allows, so on a host shared with guests one sleep preempted
//   for a millisecond keeps it near 1 ms and, while frames flow, the worker
//   stops sleeping: it polls a core's worth and so keeps its core through
//   a resume, when the guests want theirs back. With the 90th percentile
//   instead it used half the CPU, but CI's vhost-user transparency test
//   once saw amber 2.5-5.7 ms late per checkpoint, which no earlier CI run
//   had (README, Performance: "The delay node's own CPU"); a node with
//   cores of its own loses nothing by it.
// - kPercentile90 (a worker waiting on its ports, --idle-wait ports): a
//   frugal quantile estimator, up nine steps for a longer overshoot, down
//   one for a shorter, settling where one in ten is longer. A preempted
//   sleep, which spinning would not have escaped either, does not become
//   the norm.
#pragma once

#include <algorithm>
#include <cstdint>

namespace amber::dataplane {

class OversleepEstimate {
 public:
  enum class Rule { kDecayingMaximum, kPercentile90 };
  static constexpr int64_t kStepNs = 500;

  explicit OversleepEstimate(Rule rule = Rule::kPercentile90) : rule_(rule) {}
  void set_rule(Rule rule) { rule_ = rule; }

  int64_t ns() const { return ns_; }
  void add(int64_t over_ns) {
    if (rule_ == Rule::kDecayingMaximum) {
      ns_ = std::max(over_ns, ns_ - ns_ / 64);
    } else {
      ns_ = over_ns > ns_ ? ns_ + 9 * kStepNs : std::max<int64_t>(0, ns_ - kStepNs);
    }
  }

 private:
  Rule rule_;
  int64_t ns_ = 0;
};

}  // namespace amber::dataplane
