// Scheduled actions on the real CLOCK_REALTIME: firing accuracy, order,
// cancellation and refusals.
#include "clock-sync/action_scheduler.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "clock-sync/clock.h"

namespace amber::clock_sync {
namespace {

constexpr int64_t kUs = 1'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;

// A master-time source the test steers: a fixed correction, trust on/off.
class SteeredSource final : public MasterTimeSource {
 public:
  Result<int64_t> correction_ns() const override {
    if (!trusted) return failed_precondition("master time not trustworthy: test says so");
    return correction.load();
  }
  std::atomic<int64_t> correction{0};
  std::atomic<bool> trusted{true};
};

// Tests that bound a firing's lateness run the scheduler at SCHED_FIFO when
// they may: at normal priority a busy machine delays wake-ups by milliseconds.
constexpr int kTimingPriority = 50;
SchedulerOptions timing_options() {
  SchedulerOptions options;
  options.realtime_priority = geteuid() == 0 ? kTimingPriority : 0;
  return options;
}

std::unique_ptr<ActionScheduler> make(const MasterTimeSource& source,
                                      SchedulerOptions options = {}) {
  auto s = ActionScheduler::create(source, options);
  EXPECT_TRUE(s.is_ok()) << s.status().to_string();
  return std::move(s).value();
}

struct Fired {
  FiringStats stats;
  size_t slept_past_t = 0;  // firings whose sleep ended after T
};

// Fires 1000 actions 1 ms apart, checks order and that none fired early,
// and prints the firing error distribution.
Fired fire_a_thousand(int realtime_priority) {
  SteeredSource source;
  SchedulerOptions options;
  options.realtime_priority = realtime_priority;
  auto s = make(source, options);
  std::vector<ActionId> order;
  std::mutex order_mutex;
  const int64_t first = SystemClock::realtime_ns() + 200 * kMs;
  for (int i = 0; i < 1000; ++i) {
    auto id = s->schedule(first + i * kMs, [&](const Firing& f) {
      std::lock_guard lock(order_mutex);
      order.push_back(f.id);
    });
    EXPECT_TRUE(id.is_ok()) << id.status().to_string();
  }
  EXPECT_TRUE(s->wait_idle(10 * kSec));
  const auto firings = s->firings();
  EXPECT_EQ(firings.size(), 1000u);
  for (size_t i = 0; i < firings.size(); ++i) {
    EXPECT_EQ(order[i], i + 1) << "actions ran out of order";
    EXPECT_EQ(firings[i].target_ns, first + int64_t(i) * kMs);
    EXPECT_GE(firings[i].error_ns(), 0) << "action " << i << " fired early";
    EXPECT_TRUE(firings[i].clock_trusted);
  }
  const FiringStats st = summarize(firings);
  size_t slept_past_t = 0;
  for (const Firing& f : firings) slept_past_t += f.wake_lead_ns < 0;
  std::printf(
      "firing error, %zu actions 1 ms apart, %s: min %lld ns, p50 %lld ns, p99 %lld ns, "
      "max %lld ns, mean %.0f ns\n",
      st.count, realtime_priority > 0 ? "SCHED_FIFO" : "SCHED_OTHER", (long long)st.min,
      (long long)st.p50, (long long)st.p99, (long long)st.max, st.mean);
  std::printf("sleeps that ended after T: %zu of %zu\n", slept_past_t, firings.size());
  return {st, slept_past_t};
}

// At normal priority the distribution depends on whatever else runs (the
// whole test suite runs in parallel): only order and "never early" are
// asserted; bench/clock_sync.sh measures the figures.
TEST(ActionScheduler, FiresAThousandActionsOneMillisecondApart) {
  const FiringStats st = fire_a_thousand(0).stats;
  RecordProperty("p50_ns", std::to_string(st.p50));
  RecordProperty("p99_ns", std::to_string(st.p99));
  RecordProperty("max_ns", std::to_string(st.max));
}

// At SCHED_FIFO the sleep ends before T and the busy-wait reaches T: what
// is asserted is that mechanism (most sleeps end early, the median firing
// is far inside one wake-up latency), not a figure. The figures (p50 of
// 10-20 ns idle, a few us when the host steals the vCPU) are
// bench/clock_sync.sh's; a sleep without the busy-wait wakes 50-300 us
// late here.
TEST(ActionScheduler, FiresAThousandActionsOneMillisecondApartAtRealtimePriority) {
  if (geteuid() != 0) GTEST_SKIP() << "SCHED_FIFO needs root (CAP_SYS_NICE)";
  const Fired fired = fire_a_thousand(kTimingPriority);
  const FiringStats& st = fired.stats;
  RecordProperty("p50_ns", std::to_string(st.p50));
  RecordProperty("p99_ns", std::to_string(st.p99));
  RecordProperty("max_ns", std::to_string(st.max));
  EXPECT_LT(fired.slept_past_t, st.count / 10) << "the spin margin did not cover the wake-ups";
  EXPECT_LT(st.p50, 50 * kUs) << "the median firing is as late as a plain sleep's wake-up";
}

TEST(ActionScheduler, AppliesTheMasterTimeCorrection) {
  // Local clock 5 ms ahead of master: master instant T is local T + 5 ms.
  SteeredSource source;
  source.correction = 5 * kMs;
  auto s = make(source, timing_options());
  const int64_t target = SystemClock::realtime_ns() - 5 * kMs + 100 * kMs;
  std::atomic<int64_t> local_at_fire{0};
  ASSERT_TRUE(s->schedule(target, [&](const Firing&) {
                 local_at_fire = SystemClock::realtime_ns();
               }).is_ok());
  ASSERT_TRUE(s->wait_idle(2 * kSec));
  EXPECT_GE(local_at_fire.load(), target + 5 * kMs);
  EXPECT_LT(local_at_fire.load(), target + 5 * kMs + 5 * kMs);
  ASSERT_EQ(s->firings().size(), 1u);
  EXPECT_GE(s->firings()[0].error_ns(), 0);
}

TEST(ActionScheduler, RefusesPastInstantsAndUntrustedTime) {
  SteeredSource source;
  auto s = make(source);
  auto past = s->schedule(SystemClock::realtime_ns() - kMs, [](const Firing&) {});
  ASSERT_FALSE(past.is_ok());
  EXPECT_EQ(past.status().code(), ErrorCode::kOutOfRange);
  EXPECT_NE(past.status().message().find("in the past"), std::string::npos);

  source.trusted = false;
  auto untrusted = s->schedule(SystemClock::realtime_ns() + kSec, [](const Firing&) {});
  ASSERT_FALSE(untrusted.is_ok());
  EXPECT_EQ(untrusted.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(untrusted.status().message().find("master time not trustworthy: test says so"),
            std::string::npos)
      << untrusted.status().message();
  EXPECT_EQ(s->schedule(SystemClock::realtime_ns() + kSec, nullptr).status().code(),
            ErrorCode::kInvalidArgument);
}

TEST(ActionScheduler, CancelledActionsDoNotRun) {
  SteeredSource source;
  auto s = make(source);
  std::atomic<int> ran{0};
  const int64_t t = SystemClock::realtime_ns() + 100 * kMs;
  auto a = s->schedule(t, [&](const Firing&) { ran += 1; });
  auto b = s->schedule(t + kMs, [&](const Firing&) { ran += 10; });
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_TRUE(s->cancel(*a).is_ok());
  EXPECT_EQ(s->cancel(*a).code(), ErrorCode::kNotFound);
  ASSERT_TRUE(s->wait_idle(2 * kSec));
  EXPECT_EQ(ran.load(), 10);
  EXPECT_EQ(s->cancel(*b).code(), ErrorCode::kNotFound);
}

TEST(ActionScheduler, AnEarlierActionScheduledLaterFiresFirst) {
  SteeredSource source;
  auto s = make(source, timing_options());
  const int64_t now = SystemClock::realtime_ns();
  ASSERT_TRUE(s->schedule(now + 400 * kMs, [](const Firing&) {}).is_ok());
  ASSERT_TRUE(s->schedule(now + 150 * kMs, [](const Firing&) {}).is_ok());
  ASSERT_TRUE(s->wait_idle(2 * kSec));
  const auto f = s->firings();
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].target_ns, now + 150 * kMs);
  EXPECT_LT(f[0].error_ns(), 5 * kMs) << "the thread slept through the earlier action";
  EXPECT_EQ(f[1].target_ns, now + 400 * kMs);
}

TEST(ActionScheduler, TrustLostAfterSchedulingIsRecordedOnTheFiring) {
  SteeredSource source;
  auto s = make(source);
  ASSERT_TRUE(s->schedule(SystemClock::realtime_ns() + 300 * kMs, [](const Firing&) {}).is_ok());
  source.trusted = false;
  ASSERT_TRUE(s->wait_idle(2 * kSec));
  ASSERT_EQ(s->firings().size(), 1u);
  EXPECT_FALSE(s->firings()[0].clock_trusted);
}

TEST(ActionScheduler, AThrowingActionIsRecordedAndTheNextStillFires) {
  SteeredSource source;
  auto s = make(source);
  const int64_t t = SystemClock::realtime_ns() + 100 * kMs;
  ASSERT_TRUE(s->schedule(t, [](const Firing&) { throw std::runtime_error("boom"); }).is_ok());
  std::atomic<bool> second{false};
  ASSERT_TRUE(s->schedule(t + kMs, [&](const Firing&) { second = true; }).is_ok());
  ASSERT_TRUE(s->wait_idle(2 * kSec));
  const auto f = s->firings();
  ASSERT_EQ(f.size(), 2u);
  EXPECT_TRUE(f[0].action_threw);
  EXPECT_FALSE(f[1].action_threw);
  EXPECT_TRUE(second.load());
}

TEST(ActionScheduler, RealtimePriorityIsAppliedOrTheRefusalRecorded) {
  SteeredSource source;
  SchedulerOptions options;
  options.realtime_priority = 10;
  auto s = make(source, options);
  const Status rt = s->realtime_status();
  if (geteuid() == 0) {
    EXPECT_TRUE(rt.is_ok()) << rt.to_string();
  } else {
    EXPECT_NE(rt.message().find("SCHED_FIFO priority 10 refused"), std::string::npos);
  }
  ASSERT_TRUE(s->schedule(SystemClock::realtime_ns() + 100 * kMs, [](const Firing&) {}).is_ok());
  ASSERT_TRUE(s->wait_idle(2 * kSec));
  EXPECT_EQ(s->firings().size(), 1u);
}

TEST(ActionScheduler, DestructionDropsPendingActions) {
  SteeredSource source;
  std::atomic<bool> ran{false};
  {
    auto s = make(source);
    ASSERT_TRUE(s->schedule(SystemClock::realtime_ns() + 10 * kSec, [&](const Firing&) {
                   ran = true;
                 }).is_ok());
  }
  EXPECT_FALSE(ran.load());
}

TEST(ActionScheduler, BadOptionsAreRefused) {
  SteeredSource source;
  SchedulerOptions options;
  options.realtime_priority = 1000;
  EXPECT_EQ(ActionScheduler::create(source, options).status().code(), ErrorCode::kInvalidArgument);
  options = {};
  options.spin_margin_ns = -1;
  EXPECT_EQ(ActionScheduler::create(source, options).status().code(), ErrorCode::kInvalidArgument);
}

TEST(ActionScheduler, SummarizesErrors) {
  std::vector<Firing> f;
  for (int i = 1; i <= 100; ++i) f.push_back({ActionId(i), 0, i * 10, true, false, 0});
  const FiringStats st = summarize(f);
  EXPECT_EQ(st.count, 100u);
  EXPECT_EQ(st.min, 10);
  EXPECT_EQ(st.p50, 510);  // rank round(0.5 * 99) = 50 -> 51st value
  EXPECT_EQ(st.p99, 990);
  EXPECT_EQ(st.max, 1000);
}

}  // namespace
}  // namespace amber::clock_sync
