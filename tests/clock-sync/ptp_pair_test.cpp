// amber's clock-sync against a real ptp4l pair: two network namespaces
// joined by a veth pair, ptp4l as grandmaster in one and as a free-running
// slave in the other (software timestamping, layer 2, each with its own
// management socket). Both ends share this machine's one kernel clock, so
// the offsets measured here are timestamping noise only.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "clock-sync/action_scheduler.h"
#include "clock-sync/clock.h"
#include "clock-sync/pmc_client.h"
#include "clock-sync/ptp_supervisor.h"
#include "clock-sync/sync_monitor.h"

namespace amber::clock_sync {
namespace {

using namespace std::chrono_literals;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSec = 1'000'000'000;

// Fixed names (prefix amb-cs-t-) so that a crashed earlier run's leftovers
// are found and removed at start.
constexpr const char* kMasterNs = "amb-cs-t-m";
constexpr const char* kSlaveNs = "amb-cs-t-s";
constexpr const char* kMasterIf = "amb-cs-t-m0";
constexpr const char* kSlaveIf = "amb-cs-t-s0";

// Faster than linuxptp's defaults so that the test converges in seconds:
// 4 Sync and Delay_Req per second, announce every 250 ms.
const std::vector<std::string> kFastIntervals = {
    "--logSyncInterval=-2", "--logMinDelayReqInterval=-2", "--logAnnounceInterval=-2",
    "--announceReceiptTimeout=3"};

int sh(const std::string& command) {
  const int rc = std::system((command + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string output_of(const std::string& command) {
  std::string out;
  if (FILE* p = popen(command.c_str(), "r")) {
    char buf[256];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
  }
  return out;
}

// Removes our namespaces, first killing (by PID) whatever a crashed run
// left running inside them; deleting a namespace deletes its veth end.
void remove_topology() {
  for (const char* ns : {kMasterNs, kSlaveNs}) {
    std::stringstream pids(output_of(std::string("ip netns pids ") + ns + " 2>/dev/null"));
    long pid;
    while (pids >> pid) kill(static_cast<pid_t>(pid), SIGKILL);
    sh(std::string("ip netns del ") + ns);
  }
}

// The two namespaces and the veth pair, for the lifetime of a test.
class Topology {
 public:
  Topology() {
    remove_topology();
    ok_ = sh(std::string("ip netns add ") + kMasterNs) == 0 &&
          sh(std::string("ip netns add ") + kSlaveNs) == 0 &&
          sh(std::string("ip link add ") + kMasterIf + " netns " + kMasterNs +
             " type veth peer name " + kSlaveIf + " netns " + kSlaveNs) == 0 &&
          set_link(kMasterNs, kMasterIf, true) && set_link(kSlaveNs, kSlaveIf, true);
  }
  ~Topology() { remove_topology(); }
  bool ok() const { return ok_; }
  static bool set_link(const char* ns, const char* dev, bool up) {
    return sh(std::string("ip -n ") + ns + " link set " + dev + (up ? " up" : " down")) == 0;
  }

 private:
  bool ok_ = false;
};

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/amb-cs-ptp-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Polls `condition` every 50 ms until it holds or `timeout` passes.
bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

class PtpPairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    if (sh("{ command -v ptp4l || test -x /usr/sbin/ptp4l; }") != 0) {
      GTEST_SKIP() << "ptp4l (linuxptp) is not installed";
    }
    topology_ = std::make_unique<Topology>();
    ASSERT_TRUE(topology_->ok()) << "could not build namespaces " << kMasterNs << ", " << kSlaveNs;
    master_sock_ = dir_.path() + "/master.sock";
    slave_sock_ = dir_.path() + "/slave.sock";
    start_master();
    Ptp4lOptions slave;
    slave.interface = kSlaveIf;
    slave.netns = kSlaveNs;
    slave.uds_path = slave_sock_;
    slave.slave_only = true;
    slave.free_running = true;  // never steer this machine's CLOCK_REALTIME
    slave.extra_args = kFastIntervals;
    // The slave keeps a silent master for 5 s (20 announce intervals), so
    // that it is the freshness rule, not the port state, that notices first.
    slave.extra_args.push_back("--announceReceiptTimeout=20");
    slave.log_path = dir_.path() + "/slave.log";
    auto s = start_ptp4l(slave);
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    slave_ = std::move(s).value();

    auto client = PmcClient::create({slave_sock_, dir_.path() + "/pmc-slave.sock", 500 * kMs, 0});
    ASSERT_TRUE(client.is_ok()) << client.status().to_string();
    SyncMonitorOptions options;
    options.policy.mode = SyncMode::kFreeRunning;
    options.policy.bounds.max_sample_age_ns = 1 * kSec;  // 4 samples per second expected
    // Generous: a loaded machine delays timestamps by tens of us at times.
    options.policy.bounds.max_offset_step_ns = 200'000;
    options.poll_interval_ns = 100 * kMs;
    auto m = SyncMonitor::create(std::make_unique<PmcSource>(std::move(client).value()), clock_,
                                 options);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    monitor_ = std::move(m).value();
    ASSERT_TRUE(monitor_->start().is_ok());
  }

  void TearDown() override {
    monitor_.reset();
    slave_.reset();
    master_.reset();
    topology_.reset();
    if (HasFailure() && !dir_.path().empty()) {
      std::printf("--- master ptp4l log\n%s--- slave ptp4l log\n%s", log("master").c_str(),
                  log("slave").c_str());
    }
  }

  void start_master() {
    Ptp4lOptions master;
    master.interface = kMasterIf;
    master.netns = kMasterNs;
    master.uds_path = master_sock_;
    master.extra_args = kFastIntervals;
    master.log_path = dir_.path() + "/master.log";
    auto m = start_ptp4l(master);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    master_ = std::move(m).value();
  }

  std::string log(const std::string& who) const { return slurp(dir_.path() + "/" + who + ".log"); }

  bool wait_trustworthy(std::chrono::milliseconds timeout) {
    return wait_for([this] { return monitor_->verdict().trustworthy; }, timeout);
  }

  // How long the verdict takes to turn, from now.
  std::chrono::milliseconds time_to_distrust(std::chrono::milliseconds timeout) {
    const auto start = std::chrono::steady_clock::now();
    wait_for([this] { return !monitor_->verdict().trustworthy; }, timeout);
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  }

  SystemClock clock_;
  TempDir dir_;
  std::string master_sock_, slave_sock_;
  std::unique_ptr<Topology> topology_;
  std::unique_ptr<SupervisedProcess> master_, slave_;
  std::unique_ptr<SyncMonitor> monitor_;
};

TEST_F(PtpPairTest, ConvergesReportsOffsetsAndDistrustsAKilledMaster) {
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_trustworthy(60s)) << monitor_->verdict().to_string();
  std::printf("trustworthy %lld ms after ptp4l started: %s\n",
              (long long)std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - started)
                  .count(),
              monitor_->verdict().to_string().c_str());

  // What the slave reports, through the management socket.
  const SyncObservation obs = monitor_->observation();
  ASSERT_TRUE(obs.latest);
  const PtpSnapshot& s = *obs.latest;
  EXPECT_EQ(s.port.state, PortState::kUncalibrated) << "free_running keeps the port UNCALIBRATED";
  EXPECT_EQ(s.current.steps_removed, 1);
  EXPECT_TRUE(s.time_status.gm_present);
  EXPECT_EQ(s.time_status.gm_identity, s.parent.grandmaster_identity);
  EXPECT_GT(s.current.mean_path_delay_ns, 0);
  // The grandmaster's own ptp4l agrees that it is the grandmaster.
  auto master_client = PmcClient::create({master_sock_, "", 500 * kMs, 0});
  ASSERT_TRUE(master_client.is_ok());
  auto master_view = master_client.value()->snapshot();
  ASSERT_TRUE(master_view.is_ok()) << master_view.status().to_string();
  EXPECT_EQ(master_view->port.state, PortState::kMaster);
  EXPECT_EQ(master_view->parent.grandmaster_identity, s.parent.grandmaster_identity);

  // Offsets over ~2 s: one shared kernel clock, so only timestamping noise
  // (~0.5 us rms when quiet, ~2 us rms with 25 us outliers under load).
  std::vector<int64_t> offsets;
  int64_t last_ingress = 0;
  wait_for(
      [&] {
        const SyncObservation o = monitor_->observation();
        if (o.latest && o.latest->time_status.ingress_time_ns != last_ingress) {
          last_ingress = o.latest->time_status.ingress_time_ns;
          offsets.push_back(o.latest->time_status.master_offset_ns);
        }
        return offsets.size() >= 8;
      },
      5s);
  ASSERT_GE(offsets.size(), 8u) << "ptp4l produced fewer than 4 samples per second";
  double sum2 = 0;
  for (int64_t o : offsets) {
    EXPECT_LT(std::llabs(o), 200'000) << "offset " << o << " ns between two ends of one clock";
    sum2 += double(o) * double(o);
  }
  const double rms = std::sqrt(sum2 / double(offsets.size()));
  std::printf("slave offset over %zu samples: rms %.0f ns\n", offsets.size(), rms);
  EXPECT_LT(rms, 20'000);

  // Master time is local time minus the measured offset.
  ASSERT_TRUE(wait_trustworthy(5s)) << monitor_->verdict().to_string();
  auto master_now = monitor_->master_now_ns();
  const int64_t local_now = clock_.now_ns();
  ASSERT_TRUE(master_now.is_ok()) << master_now.status().to_string();
  EXPECT_LT(std::llabs(local_now - master_now.value()), 200'000);

  // An action at a master-time instant, through the real monitor.
  auto scheduler = ActionScheduler::create(*monitor_, {});
  ASSERT_TRUE(scheduler.is_ok());
  auto& sched = *scheduler.value();
  ASSERT_TRUE(sched.schedule(master_now.value() + 200 * kMs, [](const Firing&) {}).is_ok());
  ASSERT_TRUE(sched.wait_idle(2 * kSec));
  ASSERT_EQ(sched.firings().size(), 1u);
  EXPECT_TRUE(sched.firings()[0].clock_trusted);
  EXPECT_GE(sched.firings()[0].error_ns(), 0);

  // The grandmaster dies. The slave's port stays UNCALIBRATED for 5 s more,
  // but no fresh sample arrives within the 1 s bound.
  ASSERT_TRUE(master_->kill().is_ok());
  const auto took = time_to_distrust(5s);
  const SyncVerdict v = monitor_->verdict();
  ASSERT_FALSE(v.trustworthy) << "still trusted " << took.count() << " ms after the kill";
  // At most the 1 s age bound after the last sample, plus one 100 ms poll;
  // the rest is slack for a loaded machine.
  EXPECT_LT(took, 2000ms);
  std::printf("verdict after killing the master (%lld ms): %s\n", (long long)took.count(),
              v.to_string().c_str());
  EXPECT_NE(v.to_string().find("old, bound 1000.000 ms"), std::string::npos) << v.to_string();
  EXPECT_EQ(monitor_->observation().latest->port.state, PortState::kUncalibrated);
  // And the scheduler refuses, saying why.
  auto refused = sched.schedule(clock_.now_ns() + kSec, [](const Firing&) {});
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("master time not trustworthy"), std::string::npos);
}

TEST_F(PtpPairTest, DistrustsACutLinkAndRecovers) {
  ASSERT_TRUE(wait_trustworthy(60s)) << monitor_->verdict().to_string();

  // Cut the master's messages: its end of the veth goes down.
  ASSERT_TRUE(Topology::set_link(kMasterNs, kMasterIf, false));
  const auto took = time_to_distrust(5s);
  const SyncVerdict v = monitor_->verdict();
  ASSERT_FALSE(v.trustworthy) << "still trusted " << took.count() << " ms after the cut";
  EXPECT_LT(took, 2000ms);
  std::printf("verdict after cutting the link (%lld ms): %s\n", (long long)took.count(),
              v.to_string().c_str());

  // Link back: the slave finds its master again.
  ASSERT_TRUE(Topology::set_link(kMasterNs, kMasterIf, true));
  EXPECT_TRUE(wait_trustworthy(60s)) << monitor_->verdict().to_string();
}

}  // namespace
}  // namespace amber::clock_sync
