#include "controller/agents.h"

#include <thread>

#include "clock-sync/pmc_client.h"
#include "common/strings.h"
#include "common/units.h"
#include "controller/grpc_status.h"

namespace amber::controller {

Result<std::unique_ptr<MasterClock>> MasterClock::create(const config::Topology& topology) {
  std::unique_ptr<MasterClock> clock(new MasterClock());
  if (topology.ptp_socket().empty()) {
    clock->mode_ = "unsynchronized: local clock";
    return clock;
  }
  clock_sync::SyncMonitorOptions sync;
  const std::string& mode = topology.sync_mode();
  clock->mode_ = mode.empty() ? "free_running" : mode;
  sync.policy.mode = clock->mode_ == "disciplined"   ? clock_sync::SyncMode::kDisciplined
                     : clock->mode_ == "grandmaster" ? clock_sync::SyncMode::kGrandmaster
                                                     : clock_sync::SyncMode::kFreeRunning;
  auto monitor = clock_sync::SyncMonitor::open(topology.ptp_socket(), clock->local_, sync);
  if (!monitor) return monitor.status();
  clock->monitor_ = std::move(monitor).value();
  return clock;
}

Result<int64_t> MasterClock::now_ns() const {
  if (!monitor_) return clock_sync::SystemClock::realtime_ns();
  return monitor_->master_now_ns();
}

bool MasterClock::trustworthy() const {
  return !monitor_ || monitor_->verdict().trustworthy;
}

std::string MasterClock::describe() const {
  if (!monitor_) return mode_;
  const auto verdict = monitor_->verdict();
  if (!verdict.trustworthy) return cat(mode_, ": not trustworthy: ", verdict.to_string());
  return cat(mode_, ", offset ", format_duration_ns(verdict.offset_ns));
}

Result<Agents> Agents::connect(const config::Topology& topology) {
  TlsFiles tls;
  if (topology.has_tls()) tls = {topology.tls().ca(), topology.tls().cert(), topology.tls().key()};
  Agents agents;
  for (const auto& ref : topology.delay_node()) {
    auto channel = controller::connect(ref.address(), tls);
    if (!channel) return channel.status().with_context(cat("delay node ", ref.id(), ": "));
    agents.delay_nodes.push_back({ref, agent::DelayNodeAgent::NewStub(*channel)});
  }
  for (const auto& ref : topology.vm_host()) {
    auto channel = controller::connect(ref.address(), tls);
    if (!channel) return channel.status().with_context(cat("vm host ", ref.id(), ": "));
    agents.vm_hosts.push_back({ref, vmhost::VmHostAgent::NewStub(*channel)});
  }
  return agents;
}

void run_parallel(const std::vector<std::function<void()>>& tasks) {
  std::vector<std::thread> threads;
  threads.reserve(tasks.size());
  for (const auto& task : tasks) threads.emplace_back(task);
  for (auto& t : threads) t.join();
}

Status agent_error(const std::string& what, const std::string& step, const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return unavailable(cat(step, ": ", what, " unreachable: ", s.error_message()));
  }
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return deadline_exceeded(cat(step, ": ", what, " did not answer in time"));
  }
  return from_grpc(s, cat(step, ": ", what, ": "));
}

}  // namespace amber::controller
