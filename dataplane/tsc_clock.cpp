#include "dataplane/tsc_clock.h"

#include <time.h>

#include <cmath>
#include <cstdlib>
#include <thread>

namespace amber::dataplane {
namespace {

struct Sample {
  uint64_t tsc;
  int64_t ns;
};

// The pair with the shortest TSC window around clock_gettime is the most
// precise.
Sample sample() {
  Sample best{};
  uint64_t best_window = ~uint64_t{0};
  for (int i = 0; i < 16; ++i) {
    timespec ts;
    const uint64_t t0 = rte_rdtsc_precise();
    clock_gettime(CLOCK_REALTIME, &ts);
    const uint64_t t1 = rte_rdtsc_precise();
    if (t1 - t0 < best_window) {
      best_window = t1 - t0;
      best = {t0 + (t1 - t0) / 2, ts.tv_sec * 1'000'000'000LL + ts.tv_nsec};
    }
  }
  return best;
}

}  // namespace

uint64_t ClockDiscipline::mult_of(double ns_per_tick) {
  return static_cast<uint64_t>(std::llround(ns_per_tick * 4294967296.0));
}

ClockDiscipline::ClockDiscipline(uint64_t tsc, int64_t ns, uint64_t nominal_hz)
    : window_{{tsc, ns}},
      count_(1),
      rate_hz_(static_cast<double>(nominal_hz)),
      anchor_{tsc, ns, mult_of(1e9 / static_cast<double>(nominal_hz))} {}

ClockDiscipline::Anchor ClockDiscipline::update(uint64_t tsc, int64_t ns) {
  const int64_t reading = to_ns(anchor_, tsc);
  offset_ns_ = ns - reading;
  if (std::llabs(offset_ns_) > kStepNs) {
    // The system clock was stepped (or this is far off): follow it at once,
    // and measure the rate anew from here.
    ++steps_;
    window_[0] = {tsc, ns};
    count_ = 1;
    anchor_ = {tsc, ns, mult_of(1e9 / rate_hz_)};
    return anchor_;
  }
  const Sample& oldest = window_[count_ < kWindow ? 0 : count_ % kWindow];
  if (ns - oldest.ns >= 10'000'000) {
    rate_hz_ = static_cast<double>(tsc - oldest.tsc) * 1e9 / static_cast<double>(ns - oldest.ns);
  }
  window_[count_ % kWindow] = {tsc, ns};
  ++count_;
  // Continue from the current reading (no jump), gaining the offset over
  // the next kCorrectionNs.
  const double correction = static_cast<double>(offset_ns_) / static_cast<double>(kCorrectionNs);
  anchor_ = {tsc, reading, mult_of(1e9 / rate_hz_ * (1.0 + correction))};
  return anchor_;
}

TscClock::TscClock()
    : discipline_([] {
        const Sample s = sample();
        return ClockDiscipline(s.tsc, s.ns, rte_get_tsc_hz());
      }()) {
  publish(discipline_.anchor());
  // A first rate measurement over a short interval, so the clock is right
  // to a few ppm before the control thread takes over.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  discipline();
}

void TscClock::publish(const ClockDiscipline::Anchor& a) {
  const uint32_t s = seq_.load(std::memory_order_relaxed);
  seq_.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  tsc_.store(a.tsc, std::memory_order_relaxed);
  ns_.store(a.ns, std::memory_order_relaxed);
  mult_.store(a.mult, std::memory_order_relaxed);
  seq_.store(s + 2, std::memory_order_release);
}

void TscClock::discipline() {
  const Sample s = sample();
  publish(discipline_.update(s.tsc, s.ns));
  last_offset_ns_.store(discipline_.offset_ns(), std::memory_order_relaxed);
  rate_hz_.store(discipline_.rate_hz(), std::memory_order_relaxed);
  steps_.store(discipline_.steps(), std::memory_order_relaxed);
}

}  // namespace amber::dataplane
