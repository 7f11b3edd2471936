#include "clock-sync/sync_monitor.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/strings.h"

namespace amber::clock_sync {
namespace {

// Durations in the verdict keep their precision: "812 ns", "35.2 us",
// "2000.000 ms" (common's %g formatting rounds 2.000000001 s to 2 s).
std::string ns(int64_t value) {
  char buf[48];
  const int64_t a = value < 0 ? -value : value;
  if (a < 10'000) {
    std::snprintf(buf, sizeof buf, "%lld ns", static_cast<long long>(value));
  } else if (a < 10'000'000) {
    std::snprintf(buf, sizeof buf, "%.1f us", static_cast<double>(value) / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.3f ms", static_cast<double>(value) / 1e6);
  }
  return buf;
}

}  // namespace

std::string sync_mode_name(SyncMode mode) {
  switch (mode) {
    case SyncMode::kDisciplined:
      return "disciplined";
    case SyncMode::kFreeRunning:
      return "free-running";
    case SyncMode::kGrandmaster:
      return "grandmaster";
  }
  return "unknown";
}

Status SyncVerdict::status() const {
  if (trustworthy) return Status::ok();
  return failed_precondition(cat("master time not trustworthy: ", to_string()));
}

std::string SyncVerdict::to_string() const {
  if (trustworthy) {
    if (sample_age_ns < 0) return "trustworthy";
    return cat("trustworthy (offset ", ns(offset_ns), ", sample age ", ns(sample_age_ns), ")");
  }
  std::string out;
  for (const auto& reason : reasons) {
    if (!out.empty()) out.append("; ");
    out.append(reason);
  }
  return out;
}

SyncVerdict evaluate(const SyncObservation& obs, int64_t local_now_ns, const SyncPolicy& policy) {
  SyncVerdict v;
  auto& why = v.reasons;
  const HealthBounds& b = policy.bounds;
  if (!obs.last_poll.is_ok()) why.push_back(cat("ptp4l management: ", obs.last_poll.message()));
  if (!obs.latest) {
    if (why.empty()) why.push_back("no state read from ptp4l yet");
    return v;
  }
  const PtpSnapshot& s = *obs.latest;
  const PortState state = s.port.state;

  if (policy.mode == SyncMode::kGrandmaster) {
    if (state != PortState::kMaster || s.current.steps_removed != 0) {
      why.push_back(cat("port state ", port_state_name(state), ", steps removed ",
                        s.current.steps_removed,
                        ": expected MASTER at 0 steps (this node is configured as grandmaster)"));
    }
    v.trustworthy = why.empty();
    return v;
  }

  if (policy.mode == SyncMode::kDisciplined && state != PortState::kSlave) {
    why.push_back(cat("servo not locked: port state ", port_state_name(state), ", expected SLAVE"));
  }
  if (policy.mode == SyncMode::kFreeRunning && state != PortState::kSlave &&
      state != PortState::kUncalibrated) {
    why.push_back(cat("port state ", port_state_name(state),
                      ": not tracking a master (expected UNCALIBRATED or SLAVE)"));
  }
  if (!s.time_status.gm_present) why.push_back("no grandmaster (TIME_STATUS_NP gmPresent false)");
  // Until the first delay measurement ptp4l computes offsets with a zero
  // path delay: they are off by the one-way delay.
  if (s.current.mean_path_delay_ns == 0) why.push_back("no path delay measured yet");

  const TimeStatus& t = s.time_status;
  v.offset_ns = t.master_offset_ns;
  if (t.ingress_time_ns == 0) {
    why.push_back("ptp4l has no offset sample yet");
  } else if (policy.ingress_time_is_local_clock) {
    const int64_t age = local_now_ns - t.ingress_time_ns;
    if (age < -b.max_sample_age_ns) {
      why.push_back(cat("offset sample dated ", ns(-age),
                        " in the future: ptp4l's timestamping clock is not the local clock "
                        "(hardware timestamping? set ingress_time_is_local_clock=false)"));
    } else {
      v.sample_age_ns = age < 0 ? 0 : age;
    }
  } else if (obs.sample_seen_at_ns < 0) {
    why.push_back("waiting for a new offset sample to date the current one");
  } else {
    v.sample_age_ns = local_now_ns - obs.sample_seen_at_ns;
  }
  if (v.sample_age_ns > b.max_sample_age_ns) {
    why.push_back(cat("offset sample is ", ns(v.sample_age_ns), " old, bound ",
                      ns(b.max_sample_age_ns), " (is the master alive and reachable?)"));
  }

  if (policy.mode == SyncMode::kDisciplined &&
      std::llabs(t.master_offset_ns) > b.max_abs_offset_ns) {
    why.push_back(cat("offset from master ", ns(t.master_offset_ns), " exceeds the bound of ",
                      ns(b.max_abs_offset_ns)));
  }
  if (policy.mode == SyncMode::kFreeRunning && t.ingress_time_ns != 0) {
    if (!obs.previous_sample) {
      why.push_back("a single offset sample so far: two are needed to check that it is stable");
    } else {
      const int64_t step = t.master_offset_ns - obs.previous_sample->master_offset_ns;
      if (std::llabs(step) > b.max_offset_step_ns) {
        why.push_back(cat("offset moved by ", ns(step), " between consecutive samples, bound ",
                          ns(b.max_offset_step_ns)));
      }
    }
  }
  v.trustworthy = why.empty();
  return v;
}

int64_t fitted_offset_ns(const std::deque<OffsetSample>& samples, size_t fit_samples,
                         int64_t now_ns) {
  assert(!samples.empty());
  const size_t n = std::min(samples.size(), std::max<size_t>(fit_samples, 1));
  const OffsetSample& last = samples.back();
  if (n == 1) return last.offset_ns;
  // Relative to the latest sample, in seconds and ns: doubles keep
  // sub-nanosecond precision at these magnitudes.
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = samples.size() - n; i < samples.size(); ++i) {
    const double x = static_cast<double>(samples[i].local_ns - last.local_ns) * 1e-9;
    const double y = static_cast<double>(samples[i].offset_ns - last.offset_ns);
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const double count = static_cast<double>(n);
  const double denominator = count * sxx - sx * sx;
  if (denominator <= 0) return last.offset_ns + std::llround(sy / count);
  const double slope = (count * sxy - sx * sy) / denominator;  // ns per s
  const double intercept = (sy - slope * sx) / count;          // at the latest sample
  const double at = static_cast<double>(now_ns - last.local_ns) * 1e-9;
  return last.offset_ns + std::llround(intercept + slope * at);
}

Result<std::unique_ptr<SyncMonitor>> SyncMonitor::open(const std::string& ptp_socket,
                                                       const Clock& local,
                                                       SyncMonitorOptions options) {
  PmcClientOptions pmc;
  pmc.server_path = ptp_socket;
  auto client = PmcClient::create(pmc);
  if (!client) return client.status().with_context(cat("ptp4l socket ", ptp_socket, ": "));
  auto monitor = create(std::make_unique<PmcSource>(std::move(client).value()), local, options);
  if (!monitor) return monitor.status();
  AMBER_RETURN_IF_ERROR((*monitor)->start());
  return monitor;
}

Result<std::unique_ptr<SyncMonitor>> SyncMonitor::create(std::unique_ptr<PtpSource> source,
                                                         const Clock& local,
                                                         SyncMonitorOptions options) {
  if (!source) return invalid_argument("sync monitor: no ptp4l source given");
  const HealthBounds& b = options.policy.bounds;
  if (b.max_abs_offset_ns <= 0 || b.max_offset_step_ns <= 0 || b.max_sample_age_ns <= 0) {
    return invalid_argument("sync monitor: health bounds must be positive");
  }
  if (options.policy.offset_fit_samples > 4096) {
    return invalid_argument(cat("sync monitor: offset_fit_samples ",
                                options.policy.offset_fit_samples, " is above 4096"));
  }
  if (options.poll_interval_ns <= 0 || options.poll_interval_ns >= b.max_sample_age_ns) {
    return invalid_argument(cat("sync monitor: poll interval ", ns(options.poll_interval_ns),
                                " must be positive and below the sample age bound ",
                                ns(b.max_sample_age_ns)));
  }
  return std::unique_ptr<SyncMonitor>(new SyncMonitor(std::move(source), local, options));
}

SyncMonitor::~SyncMonitor() {
  stop();
}

Status SyncMonitor::poll() {
  std::lock_guard poll_lock(poll_mutex_);
  auto snap = source_->snapshot();
  const int64_t now = local_.now_ns();
  std::lock_guard lock(mutex_);
  obs_.last_poll = snap.status();
  if (!snap) return snap.status();
  const TimeStatus& fresh = snap->time_status;
  const bool is_new =
      obs_.latest ? obs_.latest->time_status.ingress_time_ns != fresh.ingress_time_ns : true;
  if (obs_.latest && is_new) {
    if (obs_.latest->time_status.ingress_time_ns != 0) {
      obs_.previous_sample = obs_.latest->time_status;
    }
    obs_.sample_seen_at_ns = now;
  }
  if (fresh.ingress_time_ns == 0) {
    // ptp4l lost its master: old samples say nothing about the next one.
    obs_.history.clear();
    obs_.previous_sample.reset();
  } else if (is_new) {
    const int64_t dated = options_.policy.ingress_time_is_local_clock ? fresh.ingress_time_ns : now;
    // A step beyond the bound is a discontinuity (the master's clock was
    // stepped, or a new master): fitting across it would blend two clocks.
    if (!obs_.history.empty() &&
        std::llabs(fresh.master_offset_ns - obs_.history.back().offset_ns) >
            options_.policy.bounds.max_offset_step_ns) {
      obs_.history.clear();
    }
    obs_.history.push_back({dated, fresh.master_offset_ns});
    while (obs_.history.size() > std::max<size_t>(options_.policy.offset_fit_samples, 1)) {
      obs_.history.pop_front();
    }
  }
  obs_.latest = *snap;
  return Status::ok();
}

Status SyncMonitor::start() {
  std::lock_guard lock(thread_mutex_);
  if (poller_.joinable()) return failed_precondition("sync monitor: already started");
  stopping_ = false;
  poller_ = std::thread([this] { run(); });
  return Status::ok();
}

void SyncMonitor::stop() {
  {
    std::lock_guard lock(thread_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (poller_.joinable()) poller_.join();
}

void SyncMonitor::run() {
  std::unique_lock lock(thread_mutex_);
  while (!stopping_) {
    lock.unlock();
    // Failures are recorded in the observation and surface in the verdict.
    (void)poll();
    lock.lock();
    wake_.wait_for(lock, std::chrono::nanoseconds(options_.poll_interval_ns),
                   [this] { return stopping_; });
  }
}

SyncVerdict SyncMonitor::verdict() const {
  std::lock_guard lock(mutex_);
  return evaluate(obs_, local_.now_ns(), options_.policy);
}

SyncObservation SyncMonitor::observation() const {
  std::lock_guard lock(mutex_);
  return obs_;
}

Result<int64_t> SyncMonitor::correction_ns() const {
  std::lock_guard lock(mutex_);
  const SyncVerdict v = evaluate(obs_, local_.now_ns(), options_.policy);
  if (!v.trustworthy) return v.status();
  if (options_.policy.mode != SyncMode::kFreeRunning) return int64_t{0};
  // ptp4l's master_offset is slave - master.
  if (obs_.history.empty()) return obs_.latest->time_status.master_offset_ns;
  return fitted_offset_ns(obs_.history, options_.policy.offset_fit_samples, local_.now_ns());
}

Result<int64_t> SyncMonitor::master_now_ns() const {
  auto correction = correction_ns();
  if (!correction) return correction.status();
  return local_.now_ns() - *correction;
}

}  // namespace amber::clock_sync
