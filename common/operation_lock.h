// One state-changing operation on a component at a time (a Thaw that comes
// during a Save waits for it); a call that waits too long is refused,
// naming the operation in progress. A delay node owns one, which its agent
// and its telemetry commands share; a VM-host agent owns one.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>

#include "common/status.h"
#include "common/strings.h"

namespace amber {

class OperationLock {
 public:
  // A save of a large node or VM can take minutes.
  static constexpr std::chrono::seconds kTimeout{180};

  Result<std::unique_lock<std::timed_mutex>> acquire(const char* what,
                                                     std::chrono::milliseconds wait = kTimeout) {
    std::unique_lock<std::timed_mutex> guard(mutex_, std::defer_lock);
    if (!guard.try_lock_for(wait)) {
      return unavailable(
          cat(what, ": still busy with ", busy_with_.load(), " (one operation at a time)"));
    }
    busy_with_ = what;
    return guard;
  }

 private:
  std::timed_mutex mutex_;
  std::atomic<const char*> busy_with_{""};
};

}  // namespace amber
