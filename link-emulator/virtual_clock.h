// Time as the experiment sees it. Virtual time runs with real time, stops
// at a freeze instant and resumes from the same value at the thaw instant:
//
//   virtual(real) = min(real, freeze_at) - offset     while a freeze is set
//   offset += thaw_at - freeze_at                      when the thaw applies
//
// Freeze and thaw are scheduled at absolute real instants and take effect
// at those instants in virtual time however late the owner looks at the
// clock: a frame arriving after the freeze instant is stamped with it,
// nothing departs after it. Real time is passed in (injected), so the same
// class runs on the TSC in the dataplane and on plain integers in tests.
// Single-threaded: the owner (an lcore) applies commands between polls.
#pragma once

#include <cstdint>
#include <limits>

#include "common/status.h"

namespace amber::link {

class VirtualClock {
 public:
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::max();

  // Virtual time equals real time minus offset (0: virtual = real at start).
  explicit VirtualClock(int64_t offset_ns = 0) : offset_ns_(offset_ns) {}

  int64_t now(int64_t real_ns) {
    if (real_ns >= thaw_at_ns_) apply_thaw();
    return (real_ns < freeze_at_ns_ ? real_ns : freeze_at_ns_) - offset_ns_;
  }

  bool frozen(int64_t real_ns) {
    if (real_ns >= thaw_at_ns_) apply_thaw();
    return real_ns >= freeze_at_ns_;
  }

  // Refused when the instant has passed (a late freeze would not be the
  // instant every other node acts at), or a freeze is already set.
  Status schedule_freeze(int64_t at_real_ns, int64_t real_now_ns);
  // Refused when the instant has passed, no freeze is set, or it would come
  // before the freeze instant.
  Status schedule_thaw(int64_t at_real_ns, int64_t real_now_ns);
  // Drops a freeze that has not yet been reached (e.g. an aborted checkpoint).
  Status cancel_freeze(int64_t real_now_ns);

  // The virtual time at real_ns as the clock is scheduled now, changing
  // nothing (a thaw due by then counts as applied): for an instant near
  // now, as the controller asks when it maps experiment time.
  int64_t at(int64_t real_ns) const {
    int64_t offset = offset_ns_, freeze = freeze_at_ns_;
    if (real_ns >= thaw_at_ns_) {
      offset += thaw_at_ns_ - freeze_at_ns_;
      freeze = kNone;
    }
    return (real_ns < freeze ? real_ns : freeze) - offset;
  }

  int64_t freeze_at_ns() const { return freeze_at_ns_; }
  int64_t thaw_at_ns() const { return thaw_at_ns_; }
  int64_t offset_ns() const { return offset_ns_; }

  // For restore: a clock that reads `virtual_ns` at real `real_ns`, frozen
  // there (thaw it to continue).
  void restore_frozen(int64_t virtual_ns, int64_t real_ns) {
    offset_ns_ = real_ns - virtual_ns;
    freeze_at_ns_ = real_ns;
    thaw_at_ns_ = kNone;
  }

 private:
  void apply_thaw() {
    offset_ns_ += thaw_at_ns_ - freeze_at_ns_;
    freeze_at_ns_ = kNone;
    thaw_at_ns_ = kNone;
  }

  int64_t offset_ns_;
  int64_t freeze_at_ns_ = kNone;
  int64_t thaw_at_ns_ = kNone;
};

}  // namespace amber::link
