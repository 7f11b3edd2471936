// Firing error of scheduled actions: schedules N actions `interval` apart on
// local time (master = local) and prints the error distribution as one line
// bench/clock_sync.sh turns into a table.
//
//   firing_bench [--count=N] [--interval-us=U] [--spin-margin-us=U] [--rt-priority=P]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "clock-sync/action_scheduler.h"
#include "clock-sync/clock.h"

namespace {

bool flag(const char* arg, const char* name, long* value) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  *value = std::strtol(arg + n + 1, nullptr, 10);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace amber::clock_sync;
  long count = 1000, interval_us = 1000, margin_us = 500, priority = 0;
  for (int i = 1; i < argc; ++i) {
    if (!flag(argv[i], "--count", &count) && !flag(argv[i], "--interval-us", &interval_us) &&
        !flag(argv[i], "--spin-margin-us", &margin_us) &&
        !flag(argv[i], "--rt-priority", &priority)) {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  LocalIsMaster source;
  SchedulerOptions options;
  options.spin_margin_ns = margin_us * 1000;
  options.realtime_priority = static_cast<int>(priority);
  options.lock_memory = priority > 0;
  auto scheduler = ActionScheduler::create(source, options);
  if (!scheduler) {
    std::fprintf(stderr, "%s\n", scheduler.status().to_string().c_str());
    return 1;
  }
  auto& s = *scheduler.value();
  const std::string rt =
      s.realtime_status().is_ok() ? (priority > 0 ? "SCHED_FIFO" : "normal") : "refused";
  const int64_t first = SystemClock::realtime_ns() + 100'000'000;
  for (long i = 0; i < count; ++i) {
    auto id = s.schedule(first + i * interval_us * 1000, [](const Firing&) {});
    if (!id) {
      std::fprintf(stderr, "%s\n", id.status().to_string().c_str());
      return 1;
    }
  }
  if (!s.wait_idle(count * interval_us * 1000 + 10'000'000'000)) {
    std::fprintf(stderr, "actions did not all fire in time\n");
    return 1;
  }
  const auto firings = s.firings();
  const FiringStats st = summarize(firings);
  long over = 0, late_wake = 0;
  for (const auto& f : firings) {
    over += f.error_ns() > 20'000;
    late_wake += f.error_ns() > 20'000 && f.wake_lead_ns < 0;
  }
  // late_wake: of those over 20 us, how many because the sleep itself ended
  // after T (the rest were preempted while spinning).
  std::printf(
      "count=%zu p50_ns=%lld p99_ns=%lld max_ns=%lld mean_ns=%.0f over20us=%ld late_wake=%ld "
      "sched=%s\n",
      st.count, static_cast<long long>(st.p50), static_cast<long long>(st.p99),
      static_cast<long long>(st.max), st.mean, over, late_wake, rt.c_str());
  if (!s.realtime_status().is_ok()) {
    std::fprintf(stderr, "%s\n", s.realtime_status().to_string().c_str());
  }
  return 0;
}
