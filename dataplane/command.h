// Control reaches a worker lcore only through its command ring: a control
// thread (telemetry, signal handler, the gRPC agent) posts a Command and
// waits until it is done; the worker applies it between rx polls. A control
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
  // move `target`'s timeline by `at_ns` (signed) plus what it ran on from
  // now; `at_ns` = the move, `result_ns` = its total shift afterwards
  kShift,
  kScheduleEvents,  // `events` (node virtual time) onto `target`'s pipe
  kCancelEvents,    // drop `target`'s pending events; `result_ns` = how many
  kVirtualAt,       // `result_ns` = the virtual time at real instant `at_ns`
  // `target` runs on past the freeze set (not reached yet) until real
  // instant `at_ns` at the latest (Direction::run_on_from_ns)
  kRunOn,
  // `target`'s VM stopped at real instant `at_ns`: its run-on ends;
  // `result_ns` = how far it ran, -1 if it was not running on
  kEndRunOn,
};

// A command's sender and its worker race for it once the sender's timeout
// passes, and exactly one wins: the worker takes it (and the sender waits
// for the result, a matter of microseconds: no command blocks before it is
// done, a park included) or the sender withdraws it (and the worker drops
// it unread). So no command is applied after its sender was told it failed
// (#16 defect 8: a change that timed out during a save was applied to the
// restored pipes).
enum class CommandState : uint8_t {
  kQueued,     // in the ring
  kTaken,      // the worker is applying it
  kDone,       // applied; the results below are filled
  kWithdrawn,  // its sender gave up first
};

struct Command {
  CommandType type = CommandType::kStats;
  // kSetPipe, kAddWatch, kShift, k*Events: a direction this worker owns
  Direction* target = nullptr;
  FrameWatch* watch = nullptr;  // kAddWatch, kRemoveWatch
  link::PipeConfig pipe;
  std::vector<link::LinkEvent> events;  // kScheduleEvents
  int64_t at_ns = 0;
  // kPark; shared: the worker may look after the sender returned
  std::shared_ptr<std::atomic<bool>> unpark;
  // Filled by the worker:
  int64_t result_ns = -1;
  Status status;
  std::vector<DirectionStats> stats;  // sized by the sender: no allocation on the lcore
  std::atomic<CommandState> state{CommandState::kQueued};
};

}  // namespace amber::dataplane
