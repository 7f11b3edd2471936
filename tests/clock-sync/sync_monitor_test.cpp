// The sync-health rules and "master time now", on a simulated clock with a
// scripted ptp4l state (the real ptp4l pair is in ptp_pair_test).
#include "clock-sync/sync_monitor.h"

#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <memory>
#include <thread>

namespace amber::clock_sync {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kStart = 1'800'000'000 * kSec;

// What the scripted ptp4l answers next; shared with the test.
struct Script {
  Result<PtpSnapshot> next = PtpSnapshot{};
};

class ScriptedSource final : public PtpSource {
 public:
  explicit ScriptedSource(std::shared_ptr<Script> script) : script_(std::move(script)) {}
  Result<PtpSnapshot> snapshot() override { return script_->next; }

 private:
  std::shared_ptr<Script> script_;
};

PtpSnapshot tracking(PortState state, int64_t offset_ns, int64_t ingress_ns) {
  PtpSnapshot s;
  s.port.state = state;
  s.current.steps_removed = 1;
  s.current.offset_from_master_ns = static_cast<double>(offset_ns);
  s.current.mean_path_delay_ns = 2000;
  s.time_status.master_offset_ns = offset_ns;
  s.time_status.ingress_time_ns = ingress_ns;
  s.time_status.gm_present = true;
  return s;
}

class SyncMonitorTest : public ::testing::Test {
 protected:
  std::unique_ptr<SyncMonitor> monitor(SyncMode mode, bool ingress_local = true) {
    SyncMonitorOptions options;
    options.policy.mode = mode;
    options.policy.bounds.max_abs_offset_ns = 10'000;
    options.policy.bounds.max_offset_step_ns = 5'000;
    options.policy.bounds.max_sample_age_ns = 2 * kSec;
    options.policy.ingress_time_is_local_clock = ingress_local;
    options.poll_interval_ns = 100 * kMs;
    auto m = SyncMonitor::create(std::make_unique<ScriptedSource>(script_), clock_, options);
    EXPECT_TRUE(m.is_ok()) << m.status().to_string();
    return std::move(m).value();
  }
  // ptp4l produced a sample `offset` at the current simulated instant.
  void sample(SyncMonitor& m, int64_t offset, PortState state = PortState::kUncalibrated) {
    script_->next = tracking(state, offset, clock_.now_ns());
    ASSERT_TRUE(m.poll().is_ok());
  }
  static std::string reasons(const SyncVerdict& v) { return v.to_string(); }

  SimulatedClock clock_{kStart};
  std::shared_ptr<Script> script_ = std::make_shared<Script>();
};

TEST_F(SyncMonitorTest, NothingReadYetIsNotTrustworthy) {
  auto m = monitor(SyncMode::kFreeRunning);
  const SyncVerdict v = m->verdict();
  EXPECT_FALSE(v.trustworthy);
  EXPECT_EQ(v.status().message(), "master time not trustworthy: no state read from ptp4l yet");
  EXPECT_FALSE(m->master_now_ns().is_ok());
}

TEST_F(SyncMonitorTest, FreeRunningNeedsTwoStableFreshSamples) {
  auto m = monitor(SyncMode::kFreeRunning);
  sample(*m, 1500);
  EXPECT_FALSE(m->verdict().trustworthy);
  EXPECT_NE(reasons(m->verdict()).find("a single offset sample so far"), std::string::npos);

  clock_.advance_ns(kSec);
  sample(*m, 1800);
  clock_.advance_ns(300 * kMs);
  const SyncVerdict v = m->verdict();
  EXPECT_TRUE(v.trustworthy) << reasons(v);
  EXPECT_EQ(v.sample_age_ns, 300 * kMs);
  EXPECT_EQ(v.offset_ns, 1800);
  // Free-running: ptp4l's offset is slave - master; master = local - offset.
  ASSERT_TRUE(m->correction_ns().is_ok());
  EXPECT_EQ(m->correction_ns().value(), 1800);
  EXPECT_EQ(m->master_now_ns().value(), clock_.now_ns() - 1800);
}

TEST_F(SyncMonitorTest, StaleSampleFlipsTheVerdict) {
  auto m = monitor(SyncMode::kFreeRunning);
  sample(*m, 100);
  clock_.advance_ns(kSec);
  sample(*m, 120);
  ASSERT_TRUE(m->verdict().trustworthy);
  // The master stops: ptp4l keeps answering with its last sample.
  clock_.advance_ns(2 * kSec + 1);
  ASSERT_TRUE(m->poll().is_ok());
  const SyncVerdict v = m->verdict();
  EXPECT_FALSE(v.trustworthy);
  EXPECT_NE(reasons(v).find("offset sample is 2000.000 ms old, bound 2000.000 ms"),
            std::string::npos)
      << reasons(v);
  EXPECT_FALSE(m->correction_ns().is_ok());
}

TEST_F(SyncMonitorTest, JumpyOffsetIsNotTrusted) {
  auto m = monitor(SyncMode::kFreeRunning);
  sample(*m, 100);
  clock_.advance_ns(kSec);
  sample(*m, 9100);
  const SyncVerdict v = m->verdict();
  EXPECT_FALSE(v.trustworthy);
  EXPECT_NE(reasons(v).find("offset moved by 9000 ns between consecutive samples, bound 5000 ns"),
            std::string::npos)
      << reasons(v);
}

TEST_F(SyncMonitorTest, PollFailureAndPortStateAreReported) {
  auto m = monitor(SyncMode::kFreeRunning);
  sample(*m, 100);
  clock_.advance_ns(kSec);
  sample(*m, 150);
  ASSERT_TRUE(m->verdict().trustworthy);

  script_->next = unavailable("cannot send to ptp4l at /x.sock");
  EXPECT_FALSE(m->poll().is_ok());
  EXPECT_EQ(reasons(m->verdict()), "ptp4l management: cannot send to ptp4l at /x.sock");

  script_->next = tracking(PortState::kListening, 150, clock_.now_ns() - kSec);
  script_->next->time_status.gm_present = false;
  ASSERT_TRUE(m->poll().is_ok());
  const std::string why = reasons(m->verdict());
  EXPECT_NE(why.find("port state LISTENING: not tracking a master"), std::string::npos) << why;
  EXPECT_NE(why.find("no grandmaster"), std::string::npos) << why;
}

TEST_F(SyncMonitorTest, OffsetsBeforeAPathDelayMeasurementAreNotTrusted) {
  auto m = monitor(SyncMode::kFreeRunning);
  sample(*m, 100);
  clock_.advance_ns(kSec);
  script_->next = tracking(PortState::kUncalibrated, 120, clock_.now_ns());
  script_->next->current.mean_path_delay_ns = 0;
  ASSERT_TRUE(m->poll().is_ok());
  EXPECT_EQ(reasons(m->verdict()), "no path delay measured yet");
}

TEST_F(SyncMonitorTest, DisciplinedNeedsALockedServoAndASmallOffset) {
  auto m = monitor(SyncMode::kDisciplined);
  sample(*m, 200, PortState::kUncalibrated);
  EXPECT_EQ(reasons(m->verdict()), "servo not locked: port state UNCALIBRATED, expected SLAVE");

  clock_.advance_ns(kSec);
  sample(*m, -20'000, PortState::kSlave);
  EXPECT_EQ(reasons(m->verdict()), "offset from master -20.0 us exceeds the bound of 10.0 us");

  clock_.advance_ns(kSec);
  sample(*m, -300, PortState::kSlave);
  EXPECT_TRUE(m->verdict().trustworthy) << reasons(m->verdict());
  // The servo steers the local clock: no correction on top.
  EXPECT_EQ(m->correction_ns().value(), 0);
  EXPECT_EQ(m->master_now_ns().value(), clock_.now_ns());
}

TEST_F(SyncMonitorTest, GrandmasterIsTrustedWhileItIsMaster) {
  auto m = monitor(SyncMode::kGrandmaster);
  PtpSnapshot gm;
  gm.port.state = PortState::kMaster;
  script_->next = gm;
  ASSERT_TRUE(m->poll().is_ok());
  EXPECT_TRUE(m->verdict().trustworthy) << reasons(m->verdict());
  gm.port.state = PortState::kListening;
  script_->next = gm;
  ASSERT_TRUE(m->poll().is_ok());
  EXPECT_NE(reasons(m->verdict()).find("expected MASTER"), std::string::npos);
}

TEST_F(SyncMonitorTest, IngressInAnotherTimeScaleIsAgedFromWhenItChanged) {
  // Hardware timestamping: ingress_time is PHC time (TAI, 37 s ahead).
  auto m = monitor(SyncMode::kFreeRunning, /*ingress_local=*/false);
  const int64_t tai = 37 * kSec;
  script_->next = tracking(PortState::kUncalibrated, 100, clock_.now_ns() + tai);
  ASSERT_TRUE(m->poll().is_ok());
  EXPECT_NE(reasons(m->verdict()).find("waiting for a new offset sample"), std::string::npos);
  clock_.advance_ns(kSec);
  script_->next = tracking(PortState::kUncalibrated, 110, clock_.now_ns() + tai);
  ASSERT_TRUE(m->poll().is_ok());
  clock_.advance_ns(500 * kMs);
  ASSERT_TRUE(m->poll().is_ok());  // same sample again
  const SyncVerdict v = m->verdict();
  EXPECT_TRUE(v.trustworthy) << reasons(v);
  EXPECT_EQ(v.sample_age_ns, 500 * kMs);
  clock_.advance_ns(2 * kSec);
  EXPECT_FALSE(m->verdict().trustworthy);
}

TEST_F(SyncMonitorTest, IngressFromTheFutureIsCalledOut) {
  auto m = monitor(SyncMode::kFreeRunning);
  script_->next = tracking(PortState::kUncalibrated, 100, clock_.now_ns() + 37 * kSec);
  ASSERT_TRUE(m->poll().is_ok());
  EXPECT_NE(reasons(m->verdict()).find("set ingress_time_is_local_clock=false"), std::string::npos);
}

TEST_F(SyncMonitorTest, BackgroundPollerKeepsTheObservationCurrent) {
  auto m = monitor(SyncMode::kFreeRunning);
  script_->next = tracking(PortState::kUncalibrated, 42, clock_.now_ns());
  ASSERT_TRUE(m->start().is_ok());
  EXPECT_FALSE(m->start().is_ok());
  // Wait (bounded) for the first poll.
  for (int i = 0; i < 200 && !m->observation().latest; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(m->observation().latest);
  EXPECT_EQ(m->observation().latest->time_status.master_offset_ns, 42);
  m->stop();
}

TEST(FittedOffset, LatestSampleWithoutAFit) {
  const std::deque<OffsetSample> one = {{kStart, 700}};
  EXPECT_EQ(fitted_offset_ns(one, 8, kStart + kSec), 700);
  const std::deque<OffsetSample> two = {{kStart, 700}, {kStart + kSec, 900}};
  EXPECT_EQ(fitted_offset_ns(two, 1, kStart + 2 * kSec), 900);
}

TEST(FittedOffset, FollowsTheDriftOfAnUnsteeredClock) {
  // The slave runs 10 ppm fast: its offset grows 10 us per second.
  std::deque<OffsetSample> samples;
  for (int i = 0; i < 8; ++i) samples.push_back({kStart + i * 250 * kMs, 1000 + i * 2500});
  const int64_t last = kStart + 7 * 250 * kMs;
  EXPECT_EQ(fitted_offset_ns(samples, 8, last), 1000 + 7 * 2500);
  EXPECT_EQ(fitted_offset_ns(samples, 8, last + 500 * kMs), 1000 + 7 * 2500 + 5000);
  EXPECT_EQ(fitted_offset_ns(samples, 3, last + 500 * kMs), 1000 + 7 * 2500 + 5000);
}

TEST(FittedOffset, AveragesNoise) {
  std::deque<OffsetSample> samples;
  for (int i = 0; i < 16; ++i) samples.push_back({kStart + i * 250 * kMs, i % 2 ? 600 : 400});
  const int64_t fitted = fitted_offset_ns(samples, 16, kStart + 15 * 250 * kMs);
  EXPECT_NEAR(fitted, 500, 30);
  // Samples all dated alike: their mean.
  const std::deque<OffsetSample> same = {{kStart, 400}, {kStart, 600}};
  EXPECT_EQ(fitted_offset_ns(same, 2, kStart), 500);
}

TEST_F(SyncMonitorTest, FreeRunningCorrectionFitsRecentSamples) {
  SyncMonitorOptions options;
  options.policy.mode = SyncMode::kFreeRunning;
  options.policy.offset_fit_samples = 4;
  options.poll_interval_ns = 100 * kMs;
  auto made = SyncMonitor::create(std::make_unique<ScriptedSource>(script_), clock_, options);
  ASSERT_TRUE(made.is_ok());
  SyncMonitor& m = *made.value();
  // 20 ppm drift, a sample every 250 ms; six samples, the fit keeps four.
  for (int i = 0; i < 6; ++i) {
    script_->next = tracking(PortState::kUncalibrated, 3000 + i * 5000, clock_.now_ns());
    ASSERT_TRUE(m.poll().is_ok());
    clock_.advance_ns(250 * kMs);
  }
  EXPECT_EQ(m.observation().history.size(), 4u);
  ASSERT_TRUE(m.verdict().trustworthy) << m.verdict().to_string();
  // 250 ms after the last sample, the offset has grown by another 5 us.
  EXPECT_EQ(m.correction_ns().value(), 3000 + 5 * 5000 + 5000);
  // A step beyond the bound starts the fit afresh.
  script_->next = tracking(PortState::kUncalibrated, 500'000, clock_.now_ns());
  ASSERT_TRUE(m.poll().is_ok());
  EXPECT_EQ(m.observation().history.size(), 1u);
  EXPECT_FALSE(m.verdict().trustworthy);
  clock_.advance_ns(250 * kMs);
  script_->next = tracking(PortState::kUncalibrated, 505'000, clock_.now_ns());
  ASSERT_TRUE(m.poll().is_ok());
  ASSERT_TRUE(m.verdict().trustworthy) << m.verdict().to_string();
  EXPECT_EQ(m.correction_ns().value(), 505'000);
  // ptp4l loses its master: the history goes with it.
  script_->next = tracking(PortState::kListening, 0, 0);
  ASSERT_TRUE(m.poll().is_ok());
  EXPECT_TRUE(m.observation().history.empty());
  // Back with an offset far from the old ones: one sample is not enough,
  // but it is not compared with the samples from before the loss either.
  clock_.advance_ns(10 * kSec);
  script_->next = tracking(PortState::kUncalibrated, 900'000, clock_.now_ns());
  ASSERT_TRUE(m.poll().is_ok());
  EXPECT_NE(m.verdict().to_string().find("a single offset sample so far"), std::string::npos);
  clock_.advance_ns(250 * kMs);
  script_->next = tracking(PortState::kUncalibrated, 905'000, clock_.now_ns());
  ASSERT_TRUE(m.poll().is_ok());
  EXPECT_TRUE(m.verdict().trustworthy) << m.verdict().to_string();
}

TEST_F(SyncMonitorTest, CreateRefusesInconsistentOptions) {
  SyncMonitorOptions options;
  options.poll_interval_ns = options.policy.bounds.max_sample_age_ns;
  auto m = SyncMonitor::create(std::make_unique<ScriptedSource>(script_), clock_, options);
  EXPECT_EQ(m.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(SyncMonitor::create(nullptr, clock_, {}).status().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace amber::clock_sync
