// Time sources, injected wherever time matters so that tests can run on a
// simulated clock (STYLE.md, "Time is injected").
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>

namespace amber::clock_sync {

// Nanoseconds since the Unix epoch in some clock's time scale.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t now_ns() const = 0;
};

// CLOCK_REALTIME: the clock ptp4l timestamps with in software timestamping,
// and the one phc2sys disciplines.
class SystemClock final : public Clock {
 public:
  int64_t now_ns() const override { return realtime_ns(); }

  static int64_t realtime_ns() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }
};

// A clock that moves only when told to; safe to read from other threads.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(int64_t start_ns = 0) : now_(start_ns) {}
  int64_t now_ns() const override { return now_.load(std::memory_order_acquire); }
  void set_ns(int64_t t) { now_.store(t, std::memory_order_release); }
  void advance_ns(int64_t d) { now_.fetch_add(d, std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace amber::clock_sync
