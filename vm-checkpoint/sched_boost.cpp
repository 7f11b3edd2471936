#include "vm-checkpoint/sched_boost.h"

#include <dirent.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace amber::vm {

namespace {

// The thread of QEMU process `pid` that reads QMP commands off the socket
// before the main loop takes them ("IO mon_iothread" with
// -name ...,debug-threads=on); 0 if there is none.
pid_t monitor_thread(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  pid_t found = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(dir + "/" + e->d_name + "/comm");
    std::string name;
    std::getline(comm, name);
    if (name == "IO mon_iothread") {
      found = static_cast<pid_t>(std::atoi(e->d_name));
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace

SchedBoost::SchedBoost(std::span<const pid_t> qemu_pids) {
  boost(static_cast<pid_t>(::syscall(SYS_gettid)), 2);
  if (!applied_) return;  // No privilege: leave everything as it was.
  for (pid_t pid : qemu_pids) {
    boost(pid, 1);
    if (pid_t io = monitor_thread(pid)) boost(io, 1);
  }
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
