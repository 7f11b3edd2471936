#include "dataplane/tsc_clock.h"

#include <time.h>

namespace amber::dataplane {

TscClock TscClock::calibrate() {
  TscClock c;
  c.hz_ = rte_get_tsc_hz();
  c.mult_ = static_cast<uint64_t>((static_cast<unsigned __int128>(1'000'000'000ULL) << 32) / c.hz_);
  // The pair with the shortest TSC window around clock_gettime is the most
  // precise anchor.
  uint64_t best_window = ~uint64_t{0};
  for (int i = 0; i < 32; ++i) {
    timespec ts;
    uint64_t t0 = rte_rdtsc_precise();
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t t1 = rte_rdtsc_precise();
    if (t1 - t0 < best_window) {
      best_window = t1 - t0;
      c.base_tsc_ = t0 + (t1 - t0) / 2;
      c.base_ns_ = ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
    }
  }
  return c;
}

}  // namespace amber::dataplane
