// The delay node's clock discipline on a simulated machine: a TSC whose
// real rate differs from the nominal one (DPDK rounds it), a system clock
// that may be stepped. The clock must follow real time to well under a
// microsecond without ever jumping, except when the system clock steps.
#include "dataplane/tsc_clock.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

namespace amber::dataplane {
namespace {

constexpr uint64_t kNominalHz = 2'000'000'000;  // what DPDK reports
constexpr double kRealHz = 1'996'249'000.0;     // what the TSC does: 1876 ppm slower
constexpr int64_t kStart = 1'800'000'000'000'000'000;

uint64_t tsc_at(int64_t elapsed_ns) {
  return 1'000'000 +
         static_cast<uint64_t>(std::llround(static_cast<double>(elapsed_ns) * kRealHz / 1e9));
}

TEST(ClockDiscipline, FollowsRealTimeDespiteAWrongNominalRate) {
  ClockDiscipline d(tsc_at(0), kStart, kNominalHz);
  // Undisciplined, the nominal rate would be 1.876 ms off after one second.
  EXPECT_GT(std::llabs(ClockDiscipline::to_ns(d.anchor(), tsc_at(1'000'000'000)) -
                       (kStart + 1'000'000'000)),
            1'800'000);
  int64_t worst_after_warmup = 0;
  int64_t previous_reading = kStart;
  for (int64_t t = 100'000'000; t <= 60'000'000'000; t += 100'000'000) {
    // Between two samples the reading must advance smoothly: check the
    // midpoint against real time, and that time never goes backwards.
    const int64_t mid = t - 50'000'000;
    const int64_t reading = ClockDiscipline::to_ns(d.anchor(), tsc_at(mid));
    EXPECT_GE(reading, previous_reading);
    previous_reading = reading;
    if (t > 10'000'000'000)
      worst_after_warmup =
          std::max<int64_t>(worst_after_warmup, std::llabs(reading - (kStart + mid)));
    const auto before = ClockDiscipline::to_ns(d.anchor(), tsc_at(t));
    const auto anchor = d.update(tsc_at(t), kStart + t);
    EXPECT_EQ(anchor.ns, before) << "an update must not jump the reading";
  }
  EXPECT_EQ(d.steps(), 0u);
  EXPECT_NEAR(d.rate_hz(), kRealHz, 2.0);
  EXPECT_LT(worst_after_warmup, 1'000) << "ns off real time after 10 s";
}

TEST(ClockDiscipline, AStepOfTheSystemClockIsFollowed) {
  ClockDiscipline d(tsc_at(0), kStart, kNominalHz);
  for (int64_t t = 100'000'000; t <= 5'000'000'000; t += 100'000'000)
    d.update(tsc_at(t), kStart + t);
  // CLOCK_REALTIME jumps 50 ms ahead (ptp4l's first step, an admin).
  const int64_t t = 5'100'000'000;
  d.update(tsc_at(t), kStart + t + 50'000'000);
  EXPECT_EQ(d.steps(), 1u);
  EXPECT_NEAR(static_cast<double>(ClockDiscipline::to_ns(d.anchor(), tsc_at(t + 100'000'000))),
              static_cast<double>(kStart + t + 150'000'000), 2'000.0);
}

TEST(ClockDiscipline, ASmallOffsetIsSlewedAwayNotStepped) {
  ClockDiscipline d(tsc_at(0), kStart, kNominalHz);
  for (int64_t t = 100'000'000; t <= 5'000'000'000; t += 100'000'000)
    d.update(tsc_at(t), kStart + t);
  // The system clock is slewed 2 ms ahead at once (within the step bound).
  int64_t t = 5'100'000'000;
  d.update(tsc_at(t), kStart + t + 2'000'000);
  EXPECT_EQ(d.steps(), 0u);
  EXPECT_GT(std::llabs(d.offset_ns()), 1'900'000);
  for (t += 100'000'000; t <= 25'000'000'000; t += 100'000'000)
    d.update(tsc_at(t), kStart + t + 2'000'000);
  EXPECT_LT(std::llabs(d.offset_ns()), 1'000);
}

}  // namespace
}  // namespace amber::dataplane
