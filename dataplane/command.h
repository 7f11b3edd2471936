// Control reaches a worker lcore only through its command ring: a control
// thread (telemetry, signal handler, later the gRPC agent) posts a Command
// and waits for `done`; the worker applies it between rx polls. A control
// thread never touches a pipe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "dataplane/direction.h"
#include "link-emulator/pipe_config.h"

namespace amber::dataplane {

enum class CommandType : uint8_t {
  kStats,    // copy the counters of every direction of the worker into `stats`
  kSetPipe,  // reconfigure `target` with `pipe`, now
  kStop,     // leave the loop (frames stay held; the node frees them)
};

struct Command {
  CommandType type = CommandType::kStats;
  Direction* target = nullptr;  // kSetPipe: a direction this worker owns
  link::PipeConfig pipe;
  // Filled by the worker:
  Status status;
  std::vector<DirectionStats> stats;  // sized by the sender: no allocation on the lcore
  std::atomic<bool> done{false};
};

}  // namespace amber::dataplane
