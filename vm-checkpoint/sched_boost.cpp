#include "vm-checkpoint/sched_boost.h"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace amber::vm {

SchedBoost::SchedBoost(std::span<const pid_t> qemu_pids) {
  boost(static_cast<pid_t>(::syscall(SYS_gettid)), 2);
  if (!applied_) return;  // No privilege: leave everything as it was.
  for (pid_t pid : qemu_pids) boost(pid, 1);
}

void SchedBoost::boost(pid_t tid, int priority) {
  sched_param old{};
  int policy = ::sched_getscheduler(tid);
  if (policy < 0 || ::sched_getparam(tid, &old) != 0) return;
  sched_param p{};
  p.sched_priority = priority;
  if (::sched_setscheduler(tid, SCHED_FIFO, &p) != 0) return;
  saved_.push_back({tid, policy, old.sched_priority});
  applied_ = true;
}

SchedBoost::~SchedBoost() {
  // In reverse, so this thread (boosted first) is the last to drop.
  for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
    sched_param p{};
    p.sched_priority = it->priority;
    ::sched_setscheduler(it->tid, it->policy, &p);
  }
}

}  // namespace amber::vm
