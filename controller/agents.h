// The controller's side of the agents: one gRPC stub per delay node and VM
// host of the topology, master time on the controller, and running one
// call per agent in parallel.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "clock-sync/clock.h"
#include "clock-sync/sync_monitor.h"
#include "common/status.h"
#include "controller/grpc_status.h"
#include "controller/topology.h"
#include "proto/agent.grpc.pb.h"
#include "proto/vmhost.grpc.pb.h"

namespace amber::controller {

using NodeStub = agent::DelayNodeAgent::Stub;
using HostStub = vmhost::VmHostAgent::Stub;

struct DelayNodeClient {
  config::DelayNodeRef ref;
  std::unique_ptr<NodeStub> stub;
  std::string what() const { return "delay node " + ref.id(); }
};

struct VmHostClient {
  config::VmHostRef ref;
  std::unique_ptr<HostStub> stub;
  std::string what() const { return "vm host " + ref.id(); }
};

// Master time as the controller sees it: ptp4l's view through clock-sync,
// or the local clock when the topology allows unsynchronized agents.
class MasterClock {
 public:
  static Result<std::unique_ptr<MasterClock>> create(const config::Topology& topology);
  Result<int64_t> now_ns() const;
  // "free_running, offset -3.2us" or why it is not trustworthy.
  std::string describe() const;
  bool trustworthy() const;

 private:
  MasterClock() = default;
  clock_sync::SystemClock local_;
  std::unique_ptr<clock_sync::SyncMonitor> monitor_;  // null: local clock
  std::string mode_;
};

struct Agents {
  std::vector<DelayNodeClient> delay_nodes;
  std::vector<VmHostClient> vm_hosts;

  static Result<Agents> connect(const config::Topology& topology);
};

// Runs every task on its own thread and waits for all of them.
void run_parallel(const std::vector<std::function<void()>>& tasks);

// "3.2ms"-style text of a gRPC failure of `what` during `step`.
Status agent_error(const std::string& what, const std::string& step, const grpc::Status& s);

}  // namespace amber::controller
