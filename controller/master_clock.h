// Master time as the controller sees it: ptp4l's view through clock-sync,
// or the local clock when the topology allows unsynchronized agents. An
// interface, so that tests run the protocols on a clock they set.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "proto/config.pb.h"

namespace amber::controller {

class MasterClock {
 public:
  // From the topology's ptp_socket and sync_mode (none: the local clock).
  static Result<std::unique_ptr<MasterClock>> create(const config::Topology& topology);

  virtual ~MasterClock() = default;
  virtual Result<int64_t> now_ns() const = 0;
  // "free_running, offset -3.2us" or why it is not trustworthy.
  virtual std::string describe() const = 0;
  virtual bool trustworthy() const = 0;
};

}  // namespace amber::controller
