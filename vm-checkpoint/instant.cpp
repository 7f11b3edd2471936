#include "vm-checkpoint/instant.h"

#include <time.h>

#include <cerrno>
#include <cstring>

#include "common/strings.h"

namespace amber::vm {

Status SleepUntilWaiter::wait_until(WallTime instant) {
  using namespace std::chrono;
  // Sleep to 200 µs before the instant, then spin: sleeping alone lands
  // 50-100 µs late on a loaded host.
  const auto coarse = instant - microseconds(200);
  const auto ns = duration_cast<nanoseconds>(coarse.time_since_epoch()).count();
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (system_clock::now() < coarse) {
    int r = ::clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, nullptr);
    if (r != 0 && r != EINTR) return internal_error(cat("clock_nanosleep: ", std::strerror(r)));
  }
  while (system_clock::now() < instant) {
  }
  return Status::ok();
}

}  // namespace amber::vm
