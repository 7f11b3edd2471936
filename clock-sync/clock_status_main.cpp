// amber-clock-status: what an agent would conclude about this node's clock,
// from ptp4l's management socket. Exit status 0 when master time is
// trustworthy, 1 when not (the reasons are printed), 2 on usage errors.
//
//   amber-clock-status --socket=/var/run/ptp4l [--mode=free-running|disciplined|grandmaster]
//                      [--max-offset=50us] [--max-step=100us] [--max-age=3s] [--wait=2s]
//                      [--hardware-timestamps]
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <thread>

#include "clock-sync/clock.h"
#include "clock-sync/pmc_client.h"
#include "clock-sync/sync_monitor.h"
#include "common/units.h"

namespace {

using namespace amber;
using namespace amber::clock_sync;

int usage(const char* why) {
  std::fprintf(stderr,
               "amber-clock-status: %s\n"
               "usage: amber-clock-status --socket=PATH [--mode=free-running|disciplined|"
               "grandmaster]\n"
               "         [--max-offset=50us] [--max-step=100us] [--max-age=3s] [--wait=2s]\n"
               "         [--hardware-timestamps]\n",
               why);
  return 2;
}

std::string utc(int64_t ns) {
  const time_t secs = static_cast<time_t>(ns / 1'000'000'000);
  tm t;
  gmtime_r(&secs, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<long long>(ns % 1'000'000'000));
  return buf;
}

bool duration_flag(std::string_view arg, std::string_view name, int64_t* out, int* rc) {
  if (arg.substr(0, name.size()) != name) return false;
  auto value = parse_duration_ns(arg.substr(name.size()));
  if (!value) {
    *rc = usage(value.status().to_string().c_str());
  } else {
    *out = *value;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket;
  SyncMonitorOptions options;
  options.poll_interval_ns = 100'000'000;
  int64_t wait_ns = 2'000'000'000;
  int rc = 0;
  for (int i = 1; i < argc && rc == 0; ++i) {
    const std::string_view arg = argv[i];
    HealthBounds& b = options.policy.bounds;
    if (arg.substr(0, 9) == "--socket=") {
      socket = arg.substr(9);
    } else if (arg == "--mode=free-running") {
      options.policy.mode = SyncMode::kFreeRunning;
    } else if (arg == "--mode=disciplined") {
      options.policy.mode = SyncMode::kDisciplined;
    } else if (arg == "--mode=grandmaster") {
      options.policy.mode = SyncMode::kGrandmaster;
    } else if (arg == "--hardware-timestamps") {
      options.policy.ingress_time_is_local_clock = false;
    } else if (!duration_flag(arg, "--max-offset=", &b.max_abs_offset_ns, &rc) &&
               !duration_flag(arg, "--max-step=", &b.max_offset_step_ns, &rc) &&
               !duration_flag(arg, "--max-age=", &b.max_sample_age_ns, &rc) &&
               !duration_flag(arg, "--wait=", &wait_ns, &rc)) {
      return usage(("unknown argument " + std::string(arg)).c_str());
    }
  }
  if (rc != 0) return rc;
  if (socket.empty()) return usage("--socket is required (ptp4l's --uds_address)");

  auto client = PmcClient::create({socket, "", 500'000'000, 0});
  if (!client) return usage(client.status().to_string().c_str());
  SystemClock clock;
  auto monitor =
      SyncMonitor::create(std::make_unique<PmcSource>(std::move(client).value()), clock, options);
  if (!monitor) return usage(monitor.status().to_string().c_str());
  SyncMonitor& m = *monitor.value();

  // Several polls: the free-running rules need two samples.
  const int64_t until = clock.now_ns() + wait_ns;
  (void)m.poll();
  while (!m.verdict().trustworthy && clock.now_ns() < until) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(options.poll_interval_ns));
    (void)m.poll();
  }
  const SyncVerdict v = m.verdict();
  const SyncObservation o = m.observation();
  std::printf("ptp4l %s, mode %s\n", socket.c_str(), sync_mode_name(options.policy.mode).c_str());
  if (o.latest) {
    const PtpSnapshot& s = *o.latest;
    std::printf("  port %u %s, steps removed %u, grandmaster %s%s\n", s.port.port.port,
                port_state_name(s.port.state).c_str(), s.current.steps_removed,
                clock_identity_string(s.parent.grandmaster_identity).c_str(),
                s.current.steps_removed == 0 ? " (this clock)"
                : s.time_status.gm_present   ? ""
                                             : " (none present)");
    std::printf("  offset from master %lld ns, mean path delay %.0f ns\n",
                static_cast<long long>(s.time_status.master_offset_ns),
                s.current.mean_path_delay_ns);
  }
  const int64_t local = clock.now_ns();
  std::printf("  local time   %s\n", utc(local).c_str());
  if (auto master = m.master_now_ns()) std::printf("  master time  %s\n", utc(*master).c_str());
  std::printf("%s%s\n", v.trustworthy ? "" : "NOT trustworthy: ", v.to_string().c_str());
  return v.trustworthy ? 0 : 1;
}
