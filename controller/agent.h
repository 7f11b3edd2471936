// One agent of the experiment as the controller's protocols see it
// (controller/README.md): a delay node or a VM host, driven through the same
// phases. DelayNodeClient and VmHostClient speak gRPC to the real agents;
// tests drive the protocols over in-process fakes.
//
// Instants are master time in ns. `ahead_ns` is how far ahead of now the
// controller saw the instant when it chose it: a call that waits for the
// instant gets that much more than its deadline. Errors name the agent
// ("delay node dn1 did not answer in time"); the caller adds the step.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/strings.h"
#include "proto/agent.pb.h"
#include "proto/config.pb.h"
#include "proto/controller.pb.h"

namespace amber::controller {

struct Prepared {
  uint64_t estimated_bytes = 0;  // what its save will write
  int64_t round_trip_ns = 0;     // of the prepare call: how far ahead instants must be
};

struct Saved {
  std::vector<Piece> pieces;  // every file with its size and SHA-256
  AgentStep step;             // bytes written
};

// A delay node's virtual clock at an instant, the timeline it follows
// (agent::VirtualTimeReply.clock_id), and whether it stands frozen.
struct NodeTime {
  int64_t virtual_ns = 0;
  uint64_t clock_id = 0;
  bool frozen = false;
};

struct Resumed {
  AgentStep step;  // lateness, and each VM's RESUME event
  // The instant had passed when the request arrived: it resumed at once,
  // step.lateness_ns after the instant.
  bool late = false;
};

// Trigger events an agent reports as they happen (WatchFrames on a delay
// node, WatchConsole on a VM host).
class TriggerStream {
 public:
  virtual ~TriggerStream() = default;
  // Blocks for the next event; false once the stream ended (finish() says why).
  virtual bool next(agent::TriggerEvent* event) = 0;
  // Ends a next() in progress; callable from any thread.
  virtual void cancel() = 0;
  virtual Status finish() = 0;
};

class Agent {
 public:
  enum class Kind { kDelayNode, kVmHost };

  virtual ~Agent() = default;
  virtual Kind kind() const = 0;
  virtual const std::string& id() const = 0;
  // "delay node dn1", "vm host h1": in errors, progress and manifests.
  virtual std::string what() const = 0;
  // A delay node carries the frames between the VMs: naive checkpoints
  // leave it running, restores freeze it before anything loads.
  bool moves_network() const { return kind() == Kind::kDelayNode; }

  // ---- Checkpoint into the folder `dir` (<store>/<experiment>/<id>) ----
  // Whether it can take part (reachable, what the topology names is there,
  // clock trustworthy unless allowed, room in `dir`): an error says why not.
  virtual Result<Prepared> prepare(const std::string& dir, bool allow_unsynchronized) = 0;
  // Freezes the node / stops every VM at `at_ns`. Until `lease_until_ns`
  // (0: no lease) at the latest: after it the agent resumes by itself.
  // The step says how late it acted (and when each VM's STOP came).
  virtual Result<AgentStep> stop_at(int64_t at_ns, int64_t lease_until_ns, int64_t ahead_ns) = 0;
  virtual Result<Saved> save(const std::string& dir) = 0;
  // Resumes at `at_ns`; an instant that had passed when the request arrived
  // means now (late is better than an experiment half paused).
  virtual Result<Resumed> resume_at(int64_t at_ns, int64_t ahead_ns) = 0;
  // After a resume: a delay node moves each direction that delivers to a
  // VM (the topology's attach) by how much longer that VM's guest clock
  // stood still than the network (`pause_excess_ns` by VM name, from the
  // VM hosts' resume steps: AgentStep.vm_pause_excess_ns), so the frames in
  // flight reach the VM at the guest time they would have without the
  // checkpoint. The step names each shift (shift_ns); a VM host, or a
  // node with nothing attached, has nothing to do.
  virtual Result<AgentStep> align(const std::map<std::string, int64_t>& pause_excess_ns) = 0;
  // Undoes stop_at after a failure: a stop not reached yet is cancelled, an
  // instant that passed while the agent was busy means now, an agent that
  // never stopped has nothing to undo.
  virtual Status roll_back(int64_t at_ns, int64_t ahead_ns) = 0;
  // Run-on (Topology.run_on): after stop_at, VMs stopped at these instants
  // (master time, by VM name, as a VM host's freeze step reports them). A
  // delay node ends the run-on of each direction that delivers to one of
  // them; the step says how far each ran (ran_on_ns) and how late the
  // node froze. A VM host, or a node without run-on, has nothing to do.
  virtual Result<AgentStep> vm_stopped(const std::map<std::string, int64_t>& stopped_ns);
  // Swap-out: the VMs quit; a delay node stays frozen, holding its frames,
  // and its lease ends: it never thaws by itself, only a restore (or an
  // explicit thaw) ends the freeze.
  virtual Status shutdown() = 0;

  // ---- Restore of a checkpoint in `dir` ----
  // Whether `manifest` holds every piece this agent would load.
  virtual Status find_pieces(const Manifest& manifest) const = 0;
  // Reachable; true if it runs now (a node not frozen, a VM present).
  virtual Result<bool> running() = 0;
  // Loads its pieces; they stay frozen / paused until resume_at, or until
  // `lease_until_ns` (0: no lease) at the latest.
  virtual Status load(const std::string& dir, int64_t lease_until_ns) = 0;

  // ---- Observation ----
  // Reachability, clock, pipes or VMs, for `amberctl status`; `frozen` is
  // a node frozen or a VM host with a VM paused (what a controller that
  // starts reconciles).
  virtual AgentStatus status() = 0;
  // Reports the events of `trigger` (one naming this agent), whose pattern
  // is `pattern`, until cancelled.
  virtual Result<std::unique_ptr<TriggerStream>> watch(const config::Trigger& trigger,
                                                       const std::string& pattern) = 0;

  // ---- Scheduled link events (a delay node; a VM host has no links) ----
  // The node's virtual time at master instant `at_ns`: experiment time
  // maps onto it.
  virtual Result<NodeTime> virtual_time_at(int64_t at_ns);
  // Link events at instants of the node's virtual time, after dropping the
  // pending events of `request.cancel()`; returns how many were scheduled.
  virtual Result<uint32_t> schedule_events(const agent::ScheduleEventsRequest& request);
};

inline Result<AgentStep> Agent::vm_stopped(const std::map<std::string, int64_t>&) {
  return AgentStep();
}
inline Result<NodeTime> Agent::virtual_time_at(int64_t) {
  return failed_precondition(cat(what(), " has no links"));
}
inline Result<uint32_t> Agent::schedule_events(const agent::ScheduleEventsRequest&) {
  return failed_precondition(cat(what(), " has no links"));
}

}  // namespace amber::controller
