// The agents of a topology as the controller reaches them: one gRPC client
// per delay node and VM host, delay nodes first, in the topology's order.
#pragma once

#include <memory>
#include <vector>

#include "common/status.h"
#include "controller/agent.h"
#include "controller/master_clock.h"
#include "controller/topology.h"

namespace amber::controller {

// Channels connect lazily: an agent down now is reported by status and by
// the next checkpoint's prepare step. The agents read `clock` (it must
// outlive them) and the topology's deadlines.
Result<std::vector<std::unique_ptr<Agent>>> connect_agents(const Topology& topology,
                                                           const MasterClock& clock);

}  // namespace amber::controller
