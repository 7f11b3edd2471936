#include "clock-sync/action_scheduler.h"

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "clock-sync/clock.h"
#include "common/strings.h"
#include "common/units.h"

namespace amber::clock_sync {
namespace {

// Beyond this much before the spin phase the thread waits on its condition
// variable, so that new, earlier actions and cancellations are seen; the
// rest is one uninterruptible clock_nanosleep.
constexpr int64_t kHandoffNs = 1'000'000;

// Idle waits are bounded too; the loop re-checks and waits again.
constexpr auto kIdleWait = std::chrono::seconds(1);

timespec to_timespec(int64_t ns) {
  return {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

std::chrono::system_clock::time_point to_system(int64_t ns) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(ns)));
}

int64_t percentile(const std::vector<int64_t>& sorted, double p) {
  const size_t rank = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(rank, sorted.size() - 1)];
}

}  // namespace

FiringStats summarize(const std::vector<Firing>& firings) {
  FiringStats stats;
  if (firings.empty()) return stats;
  std::vector<int64_t> errors;
  errors.reserve(firings.size());
  double sum = 0;
  for (const auto& f : firings) {
    errors.push_back(f.error_ns());
    sum += static_cast<double>(f.error_ns());
  }
  std::sort(errors.begin(), errors.end());
  stats.count = errors.size();
  stats.min = errors.front();
  stats.p50 = percentile(errors, 0.50);
  stats.p99 = percentile(errors, 0.99);
  stats.max = errors.back();
  stats.mean = sum / static_cast<double>(errors.size());
  return stats;
}

Result<std::unique_ptr<ActionScheduler>> ActionScheduler::create(const MasterTimeSource& source,
                                                                 SchedulerOptions options) {
  if (options.spin_margin_ns < 0 || options.spin_margin_ns > 100'000'000) {
    return invalid_argument(
        cat("spin margin: must be within 0..100ms, got ", options.spin_margin_ns, " ns"));
  }
  const int max_priority = sched_get_priority_max(SCHED_FIFO);
  if (options.realtime_priority < 0 || options.realtime_priority > max_priority) {
    return invalid_argument(cat("realtime priority: must be 0 (none) or 1..", max_priority,
                                ", got ", options.realtime_priority));
  }
  if (options.max_records == 0) return invalid_argument("max_records: must be positive");

  std::unique_ptr<ActionScheduler> s(new ActionScheduler(source, options));
  std::string refused;
  if (options.lock_memory && mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
    refused = cat("mlockall refused: ", std::strerror(errno));
  }
  s->thread_ = std::thread([p = s.get()] { p->run(); });
  if (options.realtime_priority > 0) {
    sched_param param{};
    param.sched_priority = options.realtime_priority;
    const int err = pthread_setschedparam(s->thread_.native_handle(), SCHED_FIFO, &param);
    if (err != 0) {
      if (!refused.empty()) refused.append("; ");
      refused.append(cat("SCHED_FIFO priority ", options.realtime_priority,
                         " refused: ", std::strerror(err), "; running at normal priority"));
    }
  }
  if (!refused.empty()) s->realtime_status_ = Status(ErrorCode::kPermissionDenied, refused);
  return s;
}

ActionScheduler::~ActionScheduler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Result<ActionId> ActionScheduler::schedule(int64_t master_time_ns, Action action) {
  if (!action) return invalid_argument("schedule: no action given");
  auto correction = source_.correction_ns();
  if (!correction) {
    return correction.status().with_context(
        cat("refusing to schedule an action at ", master_time_ns, " ns: "));
  }
  const int64_t now = SystemClock::realtime_ns() - *correction;
  if (master_time_ns <= now) {
    return out_of_range(cat("refusing to schedule an action at ", master_time_ns,
                            " ns: that instant is ", format_duration_ns(now - master_time_ns),
                            " in the past (master time)"));
  }
  std::lock_guard lock(mutex_);
  if (stopping_) return failed_precondition("schedule: the scheduler is shutting down");
  const ActionId id = next_id_++;
  last_correction_ = *correction;
  const auto it = queue_.emplace(master_time_ns, Entry{id, std::move(action)});
  by_id_.emplace(id, it);
  if (it == queue_.begin()) wake_.notify_all();
  return id;
}

Status ActionScheduler::cancel(ActionId id) {
  std::lock_guard lock(mutex_);
  const auto found = by_id_.find(id);
  if (found == by_id_.end()) {
    return not_found(cat("cancel: action ", id, " is not pending (fired, firing or unknown)"));
  }
  queue_.erase(found->second);
  by_id_.erase(found);
  wake_.notify_all();
  if (queue_.empty() && !firing_) idle_.notify_all();
  return Status::ok();
}

size_t ActionScheduler::pending() const {
  std::lock_guard lock(mutex_);
  return queue_.size() + (firing_ ? 1 : 0);
}

bool ActionScheduler::wait_idle(int64_t timeout_ns) const {
  std::unique_lock lock(mutex_);
  return idle_.wait_for(lock, std::chrono::nanoseconds(timeout_ns),
                        [this] { return queue_.empty() && !firing_; });
}

std::vector<Firing> ActionScheduler::firings() const {
  std::lock_guard lock(mutex_);
  return {firings_.begin(), firings_.end()};
}

void ActionScheduler::clear_firings() {
  std::lock_guard lock(mutex_);
  firings_.clear();
}

void ActionScheduler::run() {
  // The default 50 us timer slack of SCHED_OTHER threads would delay every
  // wake-up; SCHED_FIFO threads have none anyway.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (queue_.empty()) {
      wake_.wait_for(lock, kIdleWait);
      continue;
    }
    const int64_t target = queue_.begin()->first;
    // Read the correction afresh: ptp4l's samples move it while we wait.
    bool trusted = true;
    if (auto correction = source_.correction_ns()) {
      last_correction_ = *correction;
    } else {
      trusted = false;
    }
    const int64_t local_target = target + last_correction_;
    const int64_t wait_until = local_target - options_.spin_margin_ns - kHandoffNs;
    if (wait_until > SystemClock::realtime_ns()) {
      wake_.wait_until(lock, to_system(wait_until));
      continue;
    }
    Entry entry = std::move(queue_.begin()->second);
    by_id_.erase(entry.id);
    queue_.erase(queue_.begin());
    firing_ = true;
    const int64_t correction = last_correction_;
    lock.unlock();
    fire(target, std::move(entry), correction, trusted);
    lock.lock();
    firing_ = false;
    if (queue_.empty()) idle_.notify_all();
  }
}

void ActionScheduler::fire(int64_t target_ns, Entry entry, int64_t correction, bool trusted) {
  const int64_t local_target = target_ns + correction;
  const timespec wake = to_timespec(local_target - options_.spin_margin_ns);
  while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &wake, nullptr) == EINTR) {
  }
  int64_t now = SystemClock::realtime_ns();
  const int64_t wake_lead = local_target - now;
  while (now < local_target) now = SystemClock::realtime_ns();
  Firing firing{entry.id, target_ns, now - correction, trusted, false, wake_lead};
  // An exception must not end the firing thread (and the process with it).
  try {
    entry.action(firing);
  } catch (...) {
    firing.action_threw = true;
  }
  std::lock_guard lock(mutex_);
  if (firings_.size() == options_.max_records) firings_.pop_front();
  firings_.push_back(firing);
}

}  // namespace amber::clock_sync
