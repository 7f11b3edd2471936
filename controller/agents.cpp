#include "controller/agents.h"

#include "common/strings.h"
#include "controller/delaynode_client.h"
#include "controller/vmhost_client.h"
#include "rpc/grpc_status.h"

namespace amber::controller {

Result<std::vector<std::unique_ptr<Agent>>> connect_agents(const Topology& topology,
                                                           const MasterClock& clock) {
  const config::Topology& t = topology.proto;
  TlsFiles tls;
  if (t.has_tls()) tls = {t.tls().ca(), t.tls().cert(), t.tls().key()};
  std::vector<std::unique_ptr<Agent>> agents;
  for (const auto& ref : t.delay_node()) {
    auto channel = connect(ref.address(), tls);
    if (!channel) return channel.status().with_context(cat("delay node ", ref.id(), ": "));
    agents.push_back(std::make_unique<DelayNodeClient>(
        ref, agent::DelayNodeAgent::NewStub(*channel), topology.durations, clock));
  }
  for (const auto& ref : t.vm_host()) {
    auto channel = connect(ref.address(), tls);
    if (!channel) return channel.status().with_context(cat("vm host ", ref.id(), ": "));
    agents.push_back(std::make_unique<VmHostClient>(ref, vmhost::VmHostAgent::NewStub(*channel),
                                                    topology.durations));
  }
  return agents;
}

}  // namespace amber::controller
