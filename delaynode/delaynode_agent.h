// The delay-node agent: serves proto/agent.proto's DelayNodeAgent for one
// DelayNode (freeze/thaw at an instant, save/restore images, queue surgery,
// stats, link parameters). Inside, as in the VM host: the logic over the
// node, and a thin gRPC service that checks each caller's role. gRPC and
// DPDK's own API stay behind this header and the dataplane's.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "dataplane/delay_node.h"
#include "rpc/access.h"
#include "rpc/grpc_status.h"

namespace amber::controller {

struct AgentOptions {
  // "unix:/run/amber/delaynode.sock", "127.0.0.1:7400" or "[::1]:7400";
  // port 0 picks a free one. Plain text only there (see
  // check_plaintext_address); any other address needs `tls`.
  std::string listen = "unix:/run/amber/delaynode.sock";
  TlsFiles tls;
  // ptp4l's management socket (--uds_address); empty: no PTP, instants are
  // local CLOCK_REALTIME.
  std::string ptp_socket;
  // "free-running" (amber applies ptp4l's measured offset), "disciplined"
  // (ptp4l/phc2sys steer the clock) or "grandmaster".
  std::string ptp_mode = "disciplined";
  // The checkpoint store as this node sees it: every path Prepare, Save and
  // Restore name must lie inside (access.h's PathRoot). Empty: they are
  // refused.
  std::string store;
  // Where ExportPcap writes, and operators may have it write. Empty: inside
  // the store, for the controller role only.
  std::string export_dir;
  // Who may call what over TLS (its `tls` is set from `tls` above).
  AccessPolicy access;
  // SCHED_FIFO priority for the gRPC threads that serve operations (0:
  // leave them): a run-on's VmStopped must not wait for a CPU the guests
  // hold (--agent-priority).
  int realtime_priority = 0;
};

class DelayNodeAgent {
 public:
  static Result<std::unique_ptr<DelayNodeAgent>> start(dataplane::DelayNode& node,
                                                       const AgentOptions& options);
  ~DelayNodeAgent();  // stops serving; calls in progress finish first
  DelayNodeAgent(const DelayNodeAgent&) = delete;
  DelayNodeAgent& operator=(const DelayNodeAgent&) = delete;

  // The address clients use (with the chosen port when 0 was asked for).
  const std::string& address() const;

 private:
  struct Impl;
  explicit DelayNodeAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace amber::controller
