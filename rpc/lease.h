// An agent's safety net when the controller vanishes mid-checkpoint: at the
// lease's end (an instant on this host's CLOCK_REALTIME) `on_expiry` runs on
// the lease's own thread, holding the agent's operation lock (so after a
// Save in progress), unless the lease was ended or moved first. Only a
// successful `on_expiry` (it resumed) ends the lease: one that failed runs
// again every `retry_ns` (#16 defect 2: a failed resume once deleted the
// lease, and the VMs stayed paused for good).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "clock-sync/clock.h"
#include "common/operation_lock.h"

namespace amber::controller {

class Lease {
 public:
  Lease(OperationLock& operations, std::function<bool()> on_expiry,
        int64_t retry_ns = 1'000'000'000)
      : operations_(operations),
        on_expiry_(std::move(on_expiry)),
        retry_ns_(retry_ns),
        thread_([this] { loop(); }) {}
  ~Lease() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  // The lease ends at local_ns; 0: no lease.
  void set(int64_t local_ns) {
    {
      std::lock_guard lock(mutex_);
      until_ns_ = local_ns;
    }
    wake_.notify_all();
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (until_ns_ == 0) {
        wake_.wait(lock);
        continue;
      }
      const int64_t wait = until_ns_ - clock_sync::SystemClock::realtime_ns();
      if (wait > 0) {
        wake_.wait_for(lock, std::chrono::nanoseconds(wait));
        continue;
      }
      const int64_t expired = until_ns_;
      lock.unlock();
      auto guard = operations_.acquire("lease");
      lock.lock();
      if (!guard || until_ns_ != expired || stopping_) continue;  // ended or moved meanwhile
      lock.unlock();
      const bool resumed = on_expiry_();
      guard->unlock();
      lock.lock();
      if (until_ns_ != expired) continue;  // on_expiry_ ended or moved it
      until_ns_ = resumed ? 0 : clock_sync::SystemClock::realtime_ns() + retry_ns_;
    }
  }

  OperationLock& operations_;
  const std::function<bool()> on_expiry_;
  const int64_t retry_ns_;
  std::mutex mutex_;
  std::condition_variable wake_;
  int64_t until_ns_ = 0;
  bool stopping_ = false;
  std::thread thread_;  // last: it uses everything above
};

}  // namespace amber::controller
