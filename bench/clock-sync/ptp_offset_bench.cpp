// The offset a ptp4l slave reports, read through its management socket the
// way amber reads it (every distinct TIME_STATUS_NP sample, not ptp4l's log,
// which in free-running mode prints one line per frequency-estimation
// interval). Prints one line bench/clock_sync.sh puts in its table.
//
//   ptp_offset_bench --socket=PATH [--seconds=40] [--warmup=5]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "clock-sync/clock.h"
#include "clock-sync/pmc_client.h"
#include "clock-sync/sync_monitor.h"

int main(int argc, char** argv) {
  using namespace amber::clock_sync;
  std::string socket;
  long seconds = 40, warmup = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--socket=", 9) == 0) {
      socket = argv[i] + 9;
    } else if (std::strncmp(argv[i], "--seconds=", 10) == 0) {
      seconds = std::strtol(argv[i] + 10, nullptr, 10);
    } else if (std::strncmp(argv[i], "--warmup=", 9) == 0) {
      warmup = std::strtol(argv[i] + 9, nullptr, 10);
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  auto client = PmcClient::create({socket, "", 500'000'000, 0});
  if (!client) {
    std::fprintf(stderr, "%s\n", client.status().to_string().c_str());
    return 1;
  }
  SystemClock clock;
  SyncMonitorOptions options;
  options.policy.mode = SyncMode::kFreeRunning;
  options.poll_interval_ns = 50'000'000;
  options.policy.offset_fit_samples = 16;
  auto monitor =
      SyncMonitor::create(std::make_unique<PmcSource>(std::move(client).value()), clock, options);
  if (!monitor) {
    std::fprintf(stderr, "%s\n", monitor.status().to_string().c_str());
    return 1;
  }
  auto& m = *monitor.value();

  // Converged: the verdict is trustworthy; then a warm-up, then samples.
  const int64_t give_up = clock.now_ns() + 90'000'000'000;
  while (!m.verdict().trustworthy) {
    (void)m.poll();
    if (clock.now_ns() > give_up) {
      std::fprintf(stderr, "no trustworthy verdict within 90 s: %s\n",
                   m.verdict().to_string().c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const int64_t converged = clock.now_ns();
  const int64_t start = converged + warmup * 1'000'000'000;
  const int64_t end = start + seconds * 1'000'000'000;
  std::vector<double> offsets, delays;
  int64_t last_ingress = 0;
  long polls = 0, trusted = 0;
  // Master-time error at each poll for corrections fitted to 1, 4 and 16
  // samples: both ends share one clock, so any correction is all error.
  const size_t fits[] = {1, 4, 16};
  double err2[3] = {0, 0, 0}, err_max[3] = {0, 0, 0};
  long err_n = 0;
  while (clock.now_ns() < end) {
    const bool ok = m.poll().is_ok();
    const SyncVerdict v = m.verdict();
    const SyncObservation o = m.observation();
    if (clock.now_ns() >= start) {
      ++polls;
      trusted += v.trustworthy;
      if (v.trustworthy && o.history.size() >= 16) {
        ++err_n;
        for (int k = 0; k < 3; ++k) {
          const double e = double(fitted_offset_ns(o.history, fits[k], clock.now_ns()));
          err2[k] += e * e;
          err_max[k] = std::max(err_max[k], std::fabs(e));
        }
      }
      if (ok && o.latest && o.latest->time_status.ingress_time_ns != last_ingress) {
        last_ingress = o.latest->time_status.ingress_time_ns;
        offsets.push_back(double(o.latest->time_status.master_offset_ns));
        delays.push_back(o.latest->current.mean_path_delay_ns);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (offsets.empty()) {
    std::fprintf(stderr, "no samples\n");
    return 1;
  }
  double s = 0, s2 = 0, max = 0, d = 0;
  for (size_t i = 0; i < offsets.size(); ++i) {
    s += offsets[i];
    s2 += offsets[i] * offsets[i];
    max = std::max(max, std::fabs(offsets[i]));
    d += delays[i];
  }
  const double n = double(offsets.size());
  std::printf(
      "  samples %zu over %ld s, offset rms %.0f ns, mean %.0f ns, max |offset| %.0f ns, "
      "mean path delay %.0f ns, verdict trustworthy in %ld of %ld polls\n",
      offsets.size(), seconds, std::sqrt(s2 / n), s / n, max, d / n, trusted, polls);
  if (err_n > 0) {
    std::printf("  master-time error (|correction|, truth 0) over %ld polls:", err_n);
    for (int k = 0; k < 3; ++k) {
      std::printf("%s fit %zu: rms %.0f ns max %.0f ns", k ? "," : "", fits[k],
                  std::sqrt(err2[k] / double(err_n)), err_max[k]);
    }
    std::printf("\n");
  }
  return 0;
}
