// The VM-host agent: owns this host's endpoint VMs (vm-checkpoint) and
// serves proto/vmhost.proto's VmHostAgent so the controller can stop, save,
// resume and restore them at instants shared with the delay nodes. gRPC
// stays behind this header.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "proto/vmhost.pb.h"

namespace amber::controller {

struct VmHostAgentOptions {
  vmhost::VmHost config;
  // Boot every VM now; false: wait for Restore.
  bool boot = true;
};

class VmHostAgent {
 public:
  // Validates the listen address, attaches to ptp4l if configured, boots
  // the VMs (unless told not to), then serves. On failure nothing is left
  // running.
  static Result<std::unique_ptr<VmHostAgent>> start(VmHostAgentOptions options);
  // Stops serving (calls in progress finish first), then quits every VM.
  ~VmHostAgent();
  VmHostAgent(const VmHostAgent&) = delete;
  VmHostAgent& operator=(const VmHostAgent&) = delete;

  const std::string& address() const;

 private:
  struct Impl;
  explicit VmHostAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace amber::controller
