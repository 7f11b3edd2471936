// For the ThreadSanitizer build of experiment_test only. GCC 12's
// ThreadSanitizer does not intercept pthread_mutex_clocklock, with which
// std::timed_mutex::try_lock_for locks (Experiment's operation lock): it
// would see each unlock without its lock. This definition takes the place
// of the C library's and locks through pthread_mutex_timedlock, which it
// intercepts, at the same deadline on CLOCK_REALTIME.
#include <pthread.h>
#include <time.h>

#include <cstdint>

namespace {

int64_t ns_of(const timespec& t) {
  return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

}  // namespace

extern "C" int pthread_mutex_clocklock(pthread_mutex_t* mutex, clockid_t clock,
                                       const timespec* deadline) {
  timespec now{}, real{};
  clock_gettime(clock, &now);
  clock_gettime(CLOCK_REALTIME, &real);
  const int64_t at = ns_of(real) + (ns_of(*deadline) - ns_of(now));
  const timespec until{static_cast<time_t>(at / 1'000'000'000),
                       static_cast<long>(at % 1'000'000'000)};
  return pthread_mutex_timedlock(mutex, &until);
}
