// The controller's side of one delay node: the Agent operations over the
// node's gRPC service (proto/agent.proto), with the topology's deadlines.
#pragma once

#include <memory>
#include <string>

#include "controller/agent.h"
#include "controller/master_clock.h"
#include "controller/topology.h"
#include "proto/agent.grpc.pb.h"

namespace amber::controller {

class DelayNodeClient final : public Agent {
 public:
  using Stub = agent::DelayNodeAgent::Stub;

  // `clock` (master time) must outlive the client.
  DelayNodeClient(config::DelayNodeRef ref, std::unique_ptr<Stub> stub, const Durations& durations,
                  const MasterClock& clock);

  Kind kind() const override { return Kind::kDelayNode; }
  const std::string& id() const override { return ref_.id(); }
  std::string what() const override { return what_; }

  Result<Prepared> prepare(const std::string& dir, bool allow_unsynchronized) override;
  Result<AgentStep> stop_at(int64_t at_ns, int64_t lease_until_ns, int64_t ahead_ns) override;
  Result<Saved> save(const std::string& dir) override;
  Result<Resumed> resume_at(int64_t at_ns, int64_t ahead_ns) override;
  Result<AgentStep> align(const std::map<std::string, int64_t>& pause_excess_ns) override;
  Status roll_back(int64_t at_ns, int64_t ahead_ns) override;
  Result<AgentStep> vm_stopped(const std::map<std::string, int64_t>& stopped_ns) override;
  // Stays frozen, holding its frames, and never thaws by itself (Hold).
  Status shutdown() override;

  Status find_pieces(const Manifest& manifest) const override;
  Result<bool> running() override;
  Status load(const std::string& dir, int64_t lease_until_ns) override;

  AgentStatus status() override;
  Result<std::unique_ptr<TriggerStream>> watch(const config::Trigger& trigger,
                                               const std::string& pattern) override;

  Result<NodeTime> virtual_time_at(int64_t at_ns) override;
  Result<uint32_t> schedule_events(const agent::ScheduleEventsRequest& request) override;

 private:
  const config::DelayNodeRef ref_;
  const std::unique_ptr<Stub> stub_;
  const int64_t step_deadline_ns_;
  const int64_t save_deadline_ns_;
  const int64_t watch_deadline_ns_;
  const int64_t run_on_ns_;
  const MasterClock& clock_;
  const std::string what_;
};

}  // namespace amber::controller
