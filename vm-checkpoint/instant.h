// "Do it at instant T": the one piece clock-sync will replace with its
// PTP-corrected action-at-instant. For now a plain absolute sleep on the
// host's CLOCK_REALTIME.
#pragma once

#include <chrono>

#include "common/status.h"

namespace amber::vm {

using WallTime = std::chrono::system_clock::time_point;

class InstantWaiter {
 public:
  virtual ~InstantWaiter() = default;
  // Returns at `instant` (or at once if it is past); an error if it cannot.
  virtual Status wait_until(WallTime instant) = 0;
};

// clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME), then a short spin for the
// last stretch so the wake-up does not depend on timer slack.
class SleepUntilWaiter final : public InstantWaiter {
 public:
  Status wait_until(WallTime instant) override;
};

}  // namespace amber::vm
