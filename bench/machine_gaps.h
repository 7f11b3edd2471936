// How often the machine itself takes an lcore away: spin on the TSC and
// collect every gap between two reads (an interrupt, the timer tick, a host
// descheduling the vCPU). Whatever a program on that lcore does, an event
// that falls into a gap is seen late by up to the rest of the gap: the
// share of the spin's time that lies more than X before a gap's end is the
// chance that an event at a random instant is seen more than X late.
#pragma once

#include <rte_cycles.h>

#include <algorithm>
#include <cstdint>

namespace amber::bench {

struct MachineGaps {
  double seconds = 0;
  uint64_t over_1us = 0, over_10us = 0;
  double late_2us_share = 0;   // of the time, more than 2 us before a gap's end
  double late_10us_share = 0;  // ... more than 10 us before a gap's end
  double max_gap_ns = 0;
};

// Spins on the calling lcore for `seconds`.
inline MachineGaps spin_for_gaps(double seconds) {
  MachineGaps g;
  g.seconds = seconds;
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t c1 = hz / 1'000'000, c2 = 2 * c1, c10 = 10 * c1;
  const uint64_t start = rte_rdtsc(),
                 end = start + static_cast<uint64_t>(seconds * static_cast<double>(hz));
  uint64_t last = start, late2 = 0, late10 = 0, max_gap = 0;
  while (last < end) {
    const uint64_t now = rte_rdtsc();
    const uint64_t gap = now - last;
    last = now;
    if (gap <= c1) continue;
    ++g.over_1us;
    max_gap = std::max(max_gap, gap);
    if (gap > c2) late2 += gap - c2;
    if (gap > c10) {
      ++g.over_10us;
      late10 += gap - c10;
    }
  }
  const double total = static_cast<double>(last - start);
  g.late_2us_share = static_cast<double>(late2) / total;
  g.late_10us_share = static_cast<double>(late10) / total;
  g.max_gap_ns = static_cast<double>(max_gap) * 1e9 / static_cast<double>(hz);
  return g;
}

inline int spin_for_gaps_on_lcore(void* arg) {
  auto* g = static_cast<MachineGaps*>(arg);
  *g = spin_for_gaps(g->seconds);
  return 0;
}

}  // namespace amber::bench
