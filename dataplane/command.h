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
  kStats,         // copy the counters of every direction of the worker into `stats`
  kSetPipe,       // reconfigure `target` with `pipe`, now
  kStop,          // leave the loop (frames stay held; the node frees them)
  kFreeze,        // freeze the virtual clock at real instant `at_ns`
  kThaw,          // thaw it at real instant `at_ns`
  kCancelFreeze,  // drop a freeze not yet reached
  kFreezeReport,  // `at_ns` = freeze instant, `result_ns` = when the loop saw it (-1: not yet)
  kPark,          // stop polling until `unpark` is set: the sender owns the pipes meanwhile
  kAddWatch,      // arm `watch` on `target`
  kRemoveWatch,   // disarm `watch` on every direction of the worker
  kShift,         // move `target`'s timeline by `at_ns` (signed) from now; `result_ns` = its total shift
  kScheduleEvents,  // `events` (node virtual time) onto `target`'s pipe
  kCancelEvents,    // drop `target`'s pending events; `result_ns` = how many
  kVirtualAt,       // `result_ns` = the virtual time at real instant `at_ns`
};

struct Command {
  CommandType type = CommandType::kStats;
  Direction* target = nullptr;  // kSetPipe, kAddWatch, kShift, k*Events: a direction this worker owns
  FrameWatch* watch = nullptr;  // kAddWatch, kRemoveWatch
  link::PipeConfig pipe;
  std::vector<link::LinkEvent> events;  // kScheduleEvents
  int64_t at_ns = 0;
  std::shared_ptr<std::atomic<bool>> unpark;  // kPark; shared: the worker may look after the sender returned
  // Filled by the worker:
  int64_t result_ns = -1;
  Status status;
  std::vector<DirectionStats> stats;  // sized by the sender: no allocation on the lcore
  std::atomic<bool> done{false};
};

}  // namespace amber::dataplane
