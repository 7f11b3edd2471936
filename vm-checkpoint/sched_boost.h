// Real-time scheduling for the few milliseconds around a stop or resume
// instant. On a host whose cores are busy, a QEMU main loop woken by the
// "stop" command otherwise waits for a CFS time slice, and the stops of
// several VMs spread over milliseconds.
#pragma once

#include <sys/types.h>

#include <span>
#include <vector>

namespace amber::vm {

// While alive: the calling thread at SCHED_FIFO 2 and, at 1, each QEMU's
// monitor I/O thread (which reads the QMP command) and main thread (which
// takes it, stops or starts the guest clock, pauses the vCPUs and restarts
// the back ends). vCPU threads are left
// alone: at SCHED_FIFO, busy TCG vCPUs starved everything else and made
// stops 5x later. Restores the previous policies on destruction. Without
// CAP_SYS_NICE it does nothing and says so in applied().
class SchedBoost {
 public:
  explicit SchedBoost(std::span<const pid_t> qemu_pids);
  ~SchedBoost();
  SchedBoost(const SchedBoost&) = delete;
  SchedBoost& operator=(const SchedBoost&) = delete;
  bool applied() const { return applied_; }

 private:
  struct Saved {
    pid_t tid;
    int policy;
    int priority;
  };
  void boost(pid_t tid, int priority);
  std::vector<Saved> saved_;
  bool applied_ = false;
};

}  // namespace amber::vm
