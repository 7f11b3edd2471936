// The delay node's admin commands on DPDK's telemetry socket, so
// `dpdk-telemetry.py` (or any client of the socket) can read and change it:
//   /amber/stats                      counters of every link direction
//   /amber/links                      configuration of every link direction
//   /amber/ports                      port counters (drops before the pipes)
//   /amber/set,LINK,DIR,k=v[,k=v...]  change parameters at runtime
// Handlers run on DPDK's telemetry thread and reach the workers through
// the node's command rings. A set takes the node's operation lock, as the
// agent's calls do, and is refused while another operation runs (waiting
// at most 1 s) or while the node is frozen.
#pragma once

#include <string>
#include <vector>

#include "dataplane/delay_node.h"

namespace amber::dataplane {

// Registers the commands for this node (one node per process).
void register_telemetry(DelayNode* node);

// One human-readable line per direction, for the console.
std::vector<std::string> format_stats(const std::vector<DirectionStats>& stats);

}  // namespace amber::dataplane
