// Real time from the TSC: CLOCK_REALTIME (the synchronized clock) read once
// at calibration, advanced by TSC ticks. One rdtsc and a multiply per read,
// no syscall, so the hot loop can stamp every burst.
#pragma once

#include <rte_cycles.h>

#include <cstdint>

namespace amber::dataplane {

class TscClock {
 public:
  // Anchors the TSC to CLOCK_REALTIME (best of several paired reads).
  static TscClock calibrate();

  int64_t now_ns() const { return to_ns(rte_rdtsc()); }
  int64_t to_ns(uint64_t tsc) const {
    return base_ns_ +
           static_cast<int64_t>((static_cast<unsigned __int128>(tsc - base_tsc_) * mult_) >> 32);
  }
  uint64_t to_tsc(int64_t ns) const {
    return base_tsc_ +
           static_cast<uint64_t>((static_cast<unsigned __int128>(ns - base_ns_) << 32) / mult_);
  }
  uint64_t hz() const { return hz_; }

 private:
  uint64_t base_tsc_ = 0;
  int64_t base_ns_ = 0;
  uint64_t mult_ = 0;  // ns per tick in 32.32 fixed point
  uint64_t hz_ = 0;
};

}  // namespace amber::dataplane
