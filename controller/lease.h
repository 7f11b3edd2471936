// An agent's safety net when the controller vanishes mid-checkpoint: at the
// lease's end (an instant on this host's CLOCK_REALTIME) `on_expiry` runs on
// the lease's own thread, holding the agent's operation lock (so after a
// Save in progress), unless the lease was ended or moved first.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "clock-sync/clock.h"
#include "controller/operation_lock.h"

namespace amber::controller {

class Lease {
 public:
  Lease(OperationLock& operations, std::function<void()> on_expiry)
      : operations_(operations), on_expiry_(std::move(on_expiry)), thread_([this] { loop(); }) {}
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
      until_ns_ = 0;
      lock.unlock();
      on_expiry_();
      guard->unlock();
      lock.lock();
    }
  }

  OperationLock& operations_;
  const std::function<void()> on_expiry_;
  std::mutex mutex_;
  std::condition_variable wake_;
  int64_t until_ns_ = 0;
  bool stopping_ = false;
  std::thread thread_;  // last: it uses everything above
};

}  // namespace amber::controller
