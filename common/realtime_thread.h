// The calling thread at SCHED_FIFO while an object lives, and as it was
// afterwards; without the privilege nothing changes (applied() says so).
// For the threads a run-on's report passes through (controller/README.md,
// "Run-on"): on a host whose CPUs the guests keep busy, a thread woken at
// SCHED_OTHER by a reply can wait milliseconds for a CPU.
#pragma once

#include <pthread.h>
#include <sched.h>

namespace amber {

// The calling thread at SCHED_FIFO `priority` from now on; false if refused.
inline bool make_thread_realtime(int priority) {
  sched_param p{};
  p.sched_priority = priority;
  return pthread_setschedparam(pthread_self(), SCHED_FIFO, &p) == 0;
}

class RealtimeThread {
 public:
  explicit RealtimeThread(int priority) {
    if (pthread_getschedparam(pthread_self(), &policy_, &saved_) != 0) return;
    applied_ = make_thread_realtime(priority);
  }
  ~RealtimeThread() {
    if (applied_) pthread_setschedparam(pthread_self(), policy_, &saved_);
  }
  RealtimeThread(const RealtimeThread&) = delete;
  RealtimeThread& operator=(const RealtimeThread&) = delete;
  bool applied() const { return applied_; }

 private:
  int policy_ = SCHED_OTHER;
  sched_param saved_{};
  bool applied_ = false;
};

}  // namespace amber
