#include "controller/master_clock.h"

#include "clock-sync/clock.h"
#include "clock-sync/sync_monitor.h"
#include "common/strings.h"
#include "common/units.h"

namespace amber::controller {
namespace {

class PtpMasterClock final : public MasterClock {
 public:
  explicit PtpMasterClock(std::string mode) : mode_(std::move(mode)) {}

  Status open(const std::string& ptp_socket) {
    clock_sync::SyncMonitorOptions sync;
    sync.policy.mode = mode_ == "disciplined"   ? clock_sync::SyncMode::kDisciplined
                       : mode_ == "grandmaster" ? clock_sync::SyncMode::kGrandmaster
                                                : clock_sync::SyncMode::kFreeRunning;
    auto monitor = clock_sync::SyncMonitor::open(ptp_socket, local_, sync);
    if (!monitor) return monitor.status();
    monitor_ = std::move(monitor).value();
    return Status::ok();
  }

  Result<int64_t> now_ns() const override {
    if (!monitor_) return clock_sync::SystemClock::realtime_ns();
    return monitor_->master_now_ns();
  }

  bool trustworthy() const override { return !monitor_ || monitor_->verdict().trustworthy; }

  std::string describe() const override {
    if (!monitor_) return mode_;
    const auto verdict = monitor_->verdict();
    if (!verdict.trustworthy) return cat(mode_, ": not trustworthy: ", verdict.to_string());
    return cat(mode_, ", offset ", format_duration_ns(verdict.offset_ns));
  }

 private:
  const std::string mode_;
  clock_sync::SystemClock local_;
  std::unique_ptr<clock_sync::SyncMonitor> monitor_;  // null: local clock
};

}  // namespace

Result<std::unique_ptr<MasterClock>> MasterClock::create(const config::Topology& topology) {
  if (topology.ptp_socket().empty()) {
    return std::unique_ptr<MasterClock>(
        std::make_unique<PtpMasterClock>("unsynchronized: local clock"));
  }
  const std::string& mode = topology.sync_mode();
  auto clock = std::make_unique<PtpMasterClock>(mode.empty() ? "free_running" : mode);
  if (Status s = clock->open(topology.ptp_socket()); !s) return s;
  return std::unique_ptr<MasterClock>(std::move(clock));
}

}  // namespace amber::controller
