// Real time from the TSC, kept on CLOCK_REALTIME (the synchronized clock):
// one rdtsc and a multiply per read, no syscall, so the hot loop can stamp
// every burst.
//
// The TSC rate DPDK reports is rounded (to 10 MHz on some machines: a
// 1996.25 MHz TSC read as 2000 MHz runs 1876 ppm slow, 113 ms a minute), and
// CLOCK_REALTIME itself is steered by PTP. So the clock is disciplined: a
// control thread calls discipline() every ~100 ms; it measures the offset to
// CLOCK_REALTIME and the TSC rate over a long baseline, and publishes a new
// anchor that continues the current reading without a jump and corrects
// the offset over the next second. Only an offset beyond kStepNs (the
// system clock was stepped) is corrected by a step. Readers take the anchor
// through a seqlock: lock-free, and the anchor's cache line changes ten
// times a second.
#pragma once

#include <rte_cycles.h>

#include <atomic>
#include <cstdint>

namespace amber::dataplane {

// The arithmetic of the discipline, apart from the TSC and the system
// clock so that tests can feed it samples of a simulated machine.
class ClockDiscipline {
 public:
  struct Anchor {
    uint64_t tsc = 0;
    int64_t ns = 0;
    uint64_t mult = 0;  // ns per tick, 32.32 fixed point
  };
  static constexpr int64_t kStepNs = 10'000'000;           // beyond: step, not slew
  static constexpr int64_t kCorrectionNs = 1'000'000'000;  // an offset is slewed away over this

  // The first sample: real time `ns` at `tsc`, ticking at `nominal_hz`.
  ClockDiscipline(uint64_t tsc, int64_t ns, uint64_t nominal_hz);

  static int64_t to_ns(const Anchor& a, uint64_t tsc) {
    const auto ticks = static_cast<__int128>(static_cast<int64_t>(tsc - a.tsc));
    return a.ns + static_cast<int64_t>((ticks * static_cast<__int128>(a.mult)) >> 32);
  }

  // A new sample (real `ns` at `tsc`, later than the previous ones) and the
  // anchor to publish. `offset_ns()` then tells what the clock was off by.
  Anchor update(uint64_t tsc, int64_t ns);
  const Anchor& anchor() const { return anchor_; }
  int64_t offset_ns() const { return offset_ns_; }
  double rate_hz() const { return rate_hz_; }
  uint64_t steps() const { return steps_; }

 private:
  static uint64_t mult_of(double ns_per_tick);
  // The rate is measured over the last kWindow samples (6.4 s at 100 ms):
  // long enough that sampling noise is far below a ppm, short enough that
  // a slew of the system clock biases it only for a while.
  static constexpr unsigned kWindow = 64;
  struct Sample {
    uint64_t tsc;
    int64_t ns;
  };
  Sample window_[kWindow];
  unsigned count_ = 0;  // samples taken since the last step
  double rate_hz_;
  Anchor anchor_;
  int64_t offset_ns_ = 0;
  uint64_t steps_ = 0;
};

class TscClock {
 public:
  // Anchors the TSC to CLOCK_REALTIME (best of several paired reads) and
  // measures its rate over a short interval.
  TscClock();
  TscClock(const TscClock&) = delete;
  TscClock& operator=(const TscClock&) = delete;

  int64_t now_ns() const { return to_ns(rte_rdtsc()); }
  int64_t to_ns(uint64_t tsc) const { return ClockDiscipline::to_ns(load(), tsc); }

  // One step of the discipline; from one control thread only.
  void discipline();
  // What the last discipline() found: the offset to CLOCK_REALTIME it
  // corrects (ns), the measured TSC rate, the steps taken.
  int64_t last_offset_ns() const { return last_offset_ns_.load(std::memory_order_relaxed); }
  double rate_hz() const { return rate_hz_.load(std::memory_order_relaxed); }
  uint64_t steps() const { return steps_.load(std::memory_order_relaxed); }

 private:
  ClockDiscipline::Anchor load() const {
    for (;;) {
      const uint32_t s0 = seq_.load(std::memory_order_acquire);
      ClockDiscipline::Anchor a{tsc_.load(std::memory_order_relaxed),
                                ns_.load(std::memory_order_relaxed),
                                mult_.load(std::memory_order_relaxed)};
      std::atomic_thread_fence(std::memory_order_acquire);
      if ((s0 & 1) == 0 && seq_.load(std::memory_order_relaxed) == s0) return a;
    }
  }
  void publish(const ClockDiscipline::Anchor& a);

  alignas(64) std::atomic<uint32_t> seq_{0};
  std::atomic<uint64_t> tsc_{0};
  std::atomic<int64_t> ns_{0};
  std::atomic<uint64_t> mult_{0};
  alignas(64) ClockDiscipline discipline_;  // the control thread's
  std::atomic<int64_t> last_offset_ns_{0};
  std::atomic<double> rate_hz_{0};
  std::atomic<uint64_t> steps_{0};
};

}  // namespace amber::dataplane
