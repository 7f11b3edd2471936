// Runs actions at absolute master-time instants: the VM host agent stops its
// VMs and the delay-node agent freezes its pipes at the checkpoint instant T.
// Each wait is an absolute clock_nanosleep on CLOCK_REALTIME until shortly
// before T, then a busy-wait on clock_gettime, on a thread that may run
// SCHED_FIFO. Every firing's error (actual - T) is recorded.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "clock-sync/sync_monitor.h"
#include "common/status.h"

namespace amber::clock_sync {

using ActionId = uint64_t;

struct Firing {
  ActionId id = 0;
  int64_t target_ns = 0;  // master time
  int64_t actual_ns = 0;  // master time read just before the action ran
  // False when master time stopped being trustworthy between schedule() and
  // the firing; the instant then used the last trusted correction.
  bool clock_trusted = true;
  // The action threw; the exception was swallowed so the thread lives on.
  bool action_threw = false;
  // How long before T the sleep ended (negative: it ended after T, the spin
  // margin was too short for this wake-up).
  int64_t wake_lead_ns = 0;
  int64_t error_ns() const { return actual_ns - target_ns; }
};

struct SchedulerOptions {
  // The last stretch before T is busy-waited rather than slept. It must
  // exceed the timer wake-up latency: on this project's VM (KVM guest, 2
  // vCPUs) clock_nanosleep wakes a p99 of 130-300 us late under load.
  int64_t spin_margin_ns = 500'000;
  // SCHED_FIFO priority for the firing thread (1..99); 0 keeps SCHED_OTHER.
  // When refused (no CAP_SYS_NICE, RT throttled) the thread runs at normal
  // priority and realtime_status() says why.
  int realtime_priority = 0;
  // mlockall(MCL_CURRENT | MCL_FUTURE) for the whole process: no page fault
  // at the instant. Failure is recorded, not fatal.
  bool lock_memory = false;
  // Firing records kept (oldest dropped first).
  size_t max_records = 100'000;
};

// Percentiles of firing errors, in ns.
struct FiringStats {
  size_t count = 0;
  int64_t min = 0;
  int64_t p50 = 0;
  int64_t p99 = 0;
  int64_t max = 0;
  double mean = 0;
};
FiringStats summarize(const std::vector<Firing>& firings);

class ActionScheduler {
 public:
  using Action = std::function<void(const Firing&)>;

  // `source` must outlive the scheduler.
  static Result<std::unique_ptr<ActionScheduler>> create(const MasterTimeSource& source,
                                                         SchedulerOptions options);
  // Pending actions are dropped, not run.
  ~ActionScheduler();
  ActionScheduler(const ActionScheduler&) = delete;
  ActionScheduler& operator=(const ActionScheduler&) = delete;

  // Refused when master time is not trustworthy or T is not in the future.
  Result<ActionId> schedule(int64_t master_time_ns, Action action);
  // NOT_FOUND when the action already fired, is firing or never existed.
  Status cancel(ActionId id);

  size_t pending() const;
  // Waits until nothing is pending, at most timeout_ns; false on timeout.
  bool wait_idle(int64_t timeout_ns) const;
  std::vector<Firing> firings() const;
  void clear_firings();
  // OK, or why SCHED_FIFO / mlockall were refused.
  Status realtime_status() const { return realtime_status_; }

 private:
  struct Entry {
    ActionId id;
    Action action;
  };
  using Queue = std::multimap<int64_t, Entry>;  // by master-time instant

  ActionScheduler(const MasterTimeSource& source, SchedulerOptions options)
      : source_(source), options_(options) {}
  void run();
  void fire(int64_t target_ns, Entry entry, int64_t correction, bool trusted);

  const MasterTimeSource& source_;
  const SchedulerOptions options_;
  Status realtime_status_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  mutable std::condition_variable idle_;
  Queue queue_;
  std::map<ActionId, Queue::iterator> by_id_;
  ActionId next_id_ = 1;
  bool stopping_ = false;
  bool firing_ = false;
  int64_t last_correction_ = 0;
  std::deque<Firing> firings_;
  std::thread thread_;
};

}  // namespace amber::clock_sync
