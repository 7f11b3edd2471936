// Parameters of one direction of an emulated link. Plain data: the config
// file loader and the control plane fill it, validate() says what is wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "common/status.h"

namespace amber::link {

struct NoLoss {
  bool operator==(const NoLoss&) const = default;
};

// Every frame is lost independently with this probability.
struct RandomLoss {
  double probability = 0;
  bool operator==(const RandomLoss&) const = default;
};

// Gilbert–Elliott: a good and a bad state; p = P(good -> bad),
// r = P(bad -> good), each state with its own loss probability
// (netem's "loss gemodel p r 1-h 1-k": loss_bad = 1-h, loss_good = 1-k).
struct GilbertElliottLoss {
  double p = 0;
  double r = 1;
  double loss_bad = 1;
  double loss_good = 0;
  bool operator==(const GilbertElliottLoss&) const = default;
};

// The 4-state Markov model of netem's "loss state p13 p31 p32 p23 p14"
// (Salsano et al.): 1 = received in a gap, 2 = received in a burst,
// 3 = lost in a burst, 4 = isolated loss in a gap.
struct MarkovLoss {
  double p13 = 0;
  double p31 = 1;
  double p32 = 0;
  double p23 = 0;
  double p14 = 0;
  bool operator==(const MarkovLoss&) const = default;
};

using LossConfig = std::variant<NoLoss, RandomLoss, GilbertElliottLoss, MarkovLoss>;

struct Schedule;  // schedule.h

// A pipe's schedule, shared by the copies of its configuration (a trace
// holds up to millions of entries), compared by content.
class ScheduleRef {
 public:
  ScheduleRef() = default;
  explicit ScheduleRef(Schedule schedule);
  const Schedule* get() const { return schedule_.get(); }
  const Schedule& operator*() const { return *schedule_; }
  const Schedule* operator->() const { return schedule_.get(); }
  explicit operator bool() const { return schedule_ != nullptr; }
  bool operator==(const ScheduleRef& other) const;

 private:
  std::shared_ptr<const Schedule> schedule_;
};

enum class JitterDistribution : uint8_t {
  kUniform = 0,  // delay + U(-jitter, +jitter)
  kNormal = 1,   // delay + N(0, jitter), cut at ±4 jitter
};

struct PipeConfig {
  // Link rate in bit/s; 0 means unlimited (no serialization, no queueing).
  uint64_t rate_bps = 0;
  // Bytes added to every frame when the shaper computes its serialization
  // time (e.g. 24 for Ethernet preamble, inter-frame gap and CRC).
  uint32_t overhead_bytes = 0;
  int64_t delay_ns = 0;
  int64_t jitter_ns = 0;
  JitterDistribution jitter_distribution = JitterDistribution::kUniform;
  // Bottleneck queue limits (frames waiting to be serialized, never frames
  // already on the wire). Unset means no limit of that kind; at least one
  // must be set when the rate is limited.
  std::optional<uint32_t> queue_limit_frames = 1000;
  std::optional<uint64_t> queue_limit_bytes;
  LossConfig loss;
  double duplicate = 0;  // per-frame probability of a second copy
  double corrupt = 0;    // per-frame probability of one flipped bit
  double reorder = 0;    // per-frame probability of skipping the delay line
  uint64_t seed = 1;
  // The link is down: every arriving frame is dropped (DropCause::kLinkDown);
  // frames already accepted, queued or on the wire, still leave as
  // scheduled (the cut is at the link's entrance).
  bool down = false;
  // Parameters that change over time (schedule.h); none: static.
  ScheduleRef schedule;

  // The first problem found, naming the field: "delay_ns: must not be
  // negative (-5)". Nothing is clamped.
  Status validate() const;

  bool operator==(const PipeConfig&) const = default;

 private:
  Status validate_schedule() const;
};

// One line for logs and the CLI: "100Mbit/s 20ms ±1ms q=1000 loss=1%".
std::string describe(const PipeConfig& config);

}  // namespace amber::link
