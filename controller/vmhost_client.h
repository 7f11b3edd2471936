// The controller's side of one VM host: the Agent operations over the host's
// gRPC service (proto/vmhost.proto), with the topology's deadlines.
#pragma once

#include <memory>
#include <string>

#include "controller/agent.h"
#include "controller/topology.h"
#include "proto/vmhost.grpc.pb.h"

namespace amber::controller {

class VmHostClient final : public Agent {
 public:
  using Stub = vmhost::VmHostAgent::Stub;

  VmHostClient(config::VmHostRef ref, std::unique_ptr<Stub> stub, const Durations& durations);

  Kind kind() const override { return Kind::kVmHost; }
  const std::string& id() const override { return ref_.id(); }
  std::string what() const override { return what_; }

  Result<Prepared> prepare(const std::string& dir, bool allow_unsynchronized) override;
  Result<AgentStep> stop_at(int64_t at_ns, int64_t lease_until_ns, int64_t ahead_ns) override;
  Result<Saved> save(const std::string& dir) override;
  Result<Resumed> resume_at(int64_t at_ns, int64_t ahead_ns) override;
  Result<AgentStep> align(const std::map<std::string, int64_t>&) override {
    return AgentStep();  // the network follows the VMs, not the other way
  }
  Status roll_back(int64_t at_ns, int64_t ahead_ns) override;
  Status shutdown() override;

  Status find_pieces(const Manifest& manifest) const override;
  Result<bool> running() override;
  Status load(const std::string& dir, int64_t lease_until_ns) override;

  AgentStatus status() override;
  Result<std::unique_ptr<TriggerStream>> watch(const config::Trigger& trigger,
                                               const std::string& pattern) override;

 private:
  const config::VmHostRef ref_;
  const std::unique_ptr<Stub> stub_;
  const int64_t step_deadline_ns_;
  const int64_t save_deadline_ns_;
  const int64_t watch_deadline_ns_;
  const std::string what_;
};

}  // namespace amber::controller
