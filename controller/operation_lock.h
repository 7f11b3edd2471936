// One state-changing call of an agent at a time (a Thaw that comes during a
// Save waits for it); a call that waits too long is refused, naming the
// call in progress.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>

#include "common/status.h"
#include "common/strings.h"

namespace amber::controller {

class OperationLock {
 public:
  // A save of a large node or VM can take minutes.
  static constexpr std::chrono::seconds kTimeout{180};

  Result<std::unique_lock<std::timed_mutex>> acquire(const char* what) {
    std::unique_lock<std::timed_mutex> guard(mutex_, std::defer_lock);
    if (!guard.try_lock_for(kTimeout)) {
      return unavailable(cat(what, ": the agent is still busy with ", busy_with_.load()));
    }
    busy_with_ = what;
    return guard;
  }

 private:
  std::timed_mutex mutex_;
  std::atomic<const char*> busy_with_{""};
};

}  // namespace amber::controller
