// Turns ptp4l's state into a verdict an agent can act on: is this node's
// notion of master time trustworthy right now, and if not, why. Also gives
// "master time now" for the two deployment modes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "clock-sync/clock.h"
#include "clock-sync/pmc_client.h"
#include "common/status.h"

namespace amber::clock_sync {

enum class SyncMode {
  // ptp4l/phc2sys steer the local clock: master time = local time, and the
  // servo must be locked (port state SLAVE).
  kDisciplined,
  // ptp4l runs with free_running 1: it measures without steering and stays
  // UNCALIBRATED; master time = local time - master_offset.
  kFreeRunning,
  // This node's ptp4l is the grandmaster: its clock is master time.
  kGrandmaster,
};

std::string sync_mode_name(SyncMode mode);

struct HealthBounds {
  // Disciplined mode: |offset from master| of the latest sample.
  int64_t max_abs_offset_ns = 50'000;
  // Free-running mode: the offset itself can be anything (the clocks are not
  // steered), but consecutive samples must agree, or the correction is noise.
  int64_t max_offset_step_ns = 100'000;
  // The latest offset sample must be younger than this.
  int64_t max_sample_age_ns = 3'000'000'000;
};

// Where snapshots come from: a PmcClient, or a scripted source in tests.
class PtpSource {
 public:
  virtual ~PtpSource() = default;
  virtual Result<PtpSnapshot> snapshot() = 0;
};

class PmcSource final : public PtpSource {
 public:
  explicit PmcSource(std::unique_ptr<PmcClient> client) : client_(std::move(client)) {}
  Result<PtpSnapshot> snapshot() override { return client_->snapshot(); }

 private:
  std::unique_ptr<PmcClient> client_;
};

// One offset sample, dated on the local clock.
struct OffsetSample {
  int64_t local_ns = 0;   // ingress_time, or when first seen (see SyncPolicy)
  int64_t offset_ns = 0;  // master_offset: slave - master
};

// The free-running correction at local time `now`: with one sample (or
// fit_samples <= 1) the latest offset; otherwise the least-squares line
// through the last `fit_samples` samples, evaluated at `now`. The line
// averages timestamping noise and follows the drift of an unsteered clock
// between samples. `samples` is oldest first and not empty.
int64_t fitted_offset_ns(const std::deque<OffsetSample>& samples, size_t fit_samples,
                         int64_t now_ns);

// What the verdict is computed from.
struct SyncObservation {
  std::optional<PtpSnapshot> latest;
  // The one before latest with a different ingress time (free-running step).
  std::optional<TimeStatus> previous_sample;
  Status last_poll;
  // Local time at which the latest ingress time was first seen; -1: never
  // seen change (the first snapshot's sample may be arbitrarily old).
  int64_t sample_seen_at_ns = -1;
  // Distinct samples, oldest first, at most SyncPolicy::offset_fit_samples.
  std::deque<OffsetSample> history;
};

struct SyncVerdict {
  bool trustworthy = false;
  // Why not, one entry per failed rule; empty when trustworthy.
  std::vector<std::string> reasons;
  // Diagnostics whatever the verdict (NaN-free: -1 when unknown).
  int64_t sample_age_ns = -1;
  int64_t offset_ns = 0;

  // OK, or failed_precondition("master time not trustworthy: a; b").
  Status status() const;
  std::string to_string() const;
};

struct SyncPolicy {
  SyncMode mode = SyncMode::kFreeRunning;
  HealthBounds bounds;
  // With software timestamping ptp4l's ingress_time is CLOCK_REALTIME, so the
  // sample age is now - ingress_time. With hardware timestamping it is PHC
  // time (TAI): set false to age samples from when a new one was first seen.
  bool ingress_time_is_local_clock = true;
  // Free-running mode: how many recent samples the correction is fitted to
  // (see fitted_offset_ns); 1 applies the latest offset as it is.
  size_t offset_fit_samples = 1;
};

// The rules, as a pure function of what was observed and the local time.
SyncVerdict evaluate(const SyncObservation& obs, int64_t local_now_ns, const SyncPolicy& policy);

// What the scheduler needs: the local-minus-master correction, available
// only while master time is trustworthy.
class MasterTimeSource {
 public:
  virtual ~MasterTimeSource() = default;
  // master time = local time - correction.
  virtual Result<int64_t> correction_ns() const = 0;
};

// For the grandmaster node, benchmarks and tests: local time is master time.
class LocalIsMaster final : public MasterTimeSource {
 public:
  Result<int64_t> correction_ns() const override { return int64_t{0}; }
};

struct SyncMonitorOptions {
  SyncPolicy policy;
  // The background poller's period; keep it below max_sample_age_ns.
  int64_t poll_interval_ns = 250'000'000;
};

class SyncMonitor final : public MasterTimeSource {
 public:
  // `local` must outlive the monitor.
  static Result<std::unique_ptr<SyncMonitor>> create(std::unique_ptr<PtpSource> source,
                                                     const Clock& local,
                                                     SyncMonitorOptions options);
  // The usual way: ptp4l's management socket at `ptp_socket` (its
  // --uds_address), polled on the monitor's own thread from the start.
  static Result<std::unique_ptr<SyncMonitor>> open(const std::string& ptp_socket,
                                                   const Clock& local, SyncMonitorOptions options);
  ~SyncMonitor() override;

  // One round of requests to ptp4l; also done by the background poller.
  Status poll();
  // Polls every poll_interval_ns on a thread until stop() or destruction.
  Status start();
  void stop();

  SyncVerdict verdict() const;
  SyncObservation observation() const;
  Result<int64_t> correction_ns() const override;
  // Master time now, or why it cannot be trusted.
  Result<int64_t> master_now_ns() const;
  const Clock& local_clock() const { return local_; }

 private:
  SyncMonitor(std::unique_ptr<PtpSource> source, const Clock& local, SyncMonitorOptions options)
      : source_(std::move(source)), local_(local), options_(options) {}
  void run();

  std::unique_ptr<PtpSource> source_;
  const Clock& local_;
  const SyncMonitorOptions options_;

  mutable std::mutex mutex_;
  SyncObservation obs_;
  std::mutex poll_mutex_;  // serializes poll() callers on the source

  std::mutex thread_mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread poller_;
};

}  // namespace amber::clock_sync
